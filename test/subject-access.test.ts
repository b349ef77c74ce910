/*
 * The right of access (issue 6): export_subject_data returns, as one JSON document, everything
 * held about a subject on a site (sessions, events with their props and URLs, consents, calls,
 * conversations, sales with their identifier hashes, conversions) whether the subject is named
 * by visitor id, email (normalised as Google hashes it), phone (also matching callers) or click
 * id; and nothing of another subject or another site, even one with the very same values. Only
 * admins and owners may export, in SQL and through GraphQL.
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import { addMember, becomeRoot, becomeUser, createApiKey, createUser, getRootPool, sqlState, withRootDb } from "./helpers/db";
import { flushDenials, startTestService, TestService, tokenFor } from "./helpers/http";
import { createTrackedSite, MINUTE, needlesFor, Queryable, seedSubject, SeededSubject, sha256, subjectValues, TrackedSite } from "./helpers/privacy";

interface World {
  ownerId: string;
  adminId: string;
  editorId: string;
  viewerId: string;
  adminKey: { id: string; key: string };
  editorKey: { id: string; key: string };
  viewerKey: { id: string; key: string };
  a: TrackedSite;
  b: TrackedSite;
  z: SeededSubject;
  /** A call from Z's phone alone: no visitor id, no gclid. */
  phoneOnlyCallId: string;
  y: SeededSubject;
  /** On site B, a subject with exactly Z's values. */
  twin: SeededSubject;
}

async function seedWorld(client: pg.ClientBase): Promise<World> {
  const ownerId = await createUser(client);
  const adminId = await createUser(client);
  const editorId = await createUser(client);
  const viewerId = await createUser(client);
  const a = await createTrackedSite(client, ownerId);
  const b = await createTrackedSite(client, await createUser(client));
  await addMember(client, a.id, adminId, "admin");
  await addMember(client, a.id, editorId, "editor");
  await addMember(client, a.id, viewerId, "viewer");
  const z = await seedSubject(client, a, subjectValues("zqx"));
  const { rows: [{ call }] } = await client.query("select app_private.record_call_event($1, $2::jsonb) as call", [a.id, JSON.stringify({
    call_id: `call_${randomUUID().slice(0, 12)}`, status: "missed", caller: z.values.phoneE164, tracking_number: "+902125550000",
    started_at: new Date(Date.now() - 2 * MINUTE).toISOString(),
  })]);
  const y = await seedSubject(client, a, subjectValues("yqv"));
  const twin = await seedSubject(client, b, z.values);
  return {
    ownerId, adminId, editorId, viewerId, a, b, z, y, twin, phoneOnlyCallId: call.id,
    adminKey: await createApiKey(client, a.id, "admin"), editorKey: await createApiKey(client, a.id, "editor"),
    viewerKey: await createApiKey(client, a.id, "viewer"),
  };
}

async function exportOf(db: Queryable, siteId: string, kind: string, value: string | null): Promise<Record<string, any>> {
  const { rows: [{ doc }] } = await db.query("select app_public.export_subject_data($1, $2, $3) as doc", [siteId, kind, value]);
  return doc;
}

interface Held {
  sessions: string[];
  events: string[];
  consents: string[];
  calls: string[];
  conversations: string[];
  sales: string[];
  conversions: string[];
}

/** What the database holds of a seeded subject, found from the fixture's own ids (not through subject_links). */
async function heldOf(db: Queryable, s: SeededSubject): Promise<Held> {
  const { rows: [row] } = await db.query(
    `select array(select distinct session_id::text from app_public.events where site_id = $1 and id = any($2::uuid[]) order by 1) as sessions,
            array(select id::text from app_public.events where site_id = $1 and id = any($2::uuid[]) order by 1) as events,
            array(select c.id::text from app_public.consents c join app_private.site_salts k on k.site_id = c.site_id
                   where c.site_id = $1 and c.visitor_hash = public.hmac(convert_to($3, 'UTF8'), k.salt, 'sha256') order by 1) as consents,
            array(select q.id::text from app_public.offline_conversion_queue q where q.site_id = $1 and q.sale_id = any($4::uuid[]) order by 1) as conversions`,
    [s.site.id, s.eventIds, s.values.visitor, [s.saleId, s.deliveredSaleId, s.sealSaleId]]);
  return {
    ...row, calls: [s.callId], conversations: [s.conversationId], sales: [s.saleId, s.deliveredSaleId, s.sealSaleId].sort(),
  };
}

const SECTIONS = ["sessions", "events", "consents", "calls", "conversations", "sales", "conversions"] as const;

function idsOf(doc: Record<string, any>): Held {
  const held = {} as Held;
  for (const section of SECTIONS) held[section] = (doc[section] as { id: string }[]).map((r) => r.id).sort();
  return held;
}

describe("export_subject_data", () => {
  test.each([
    ["visitor_id", (s: SeededSubject) => s.values.visitor],
    ["email", (s: SeededSubject) => s.values.email],
    ["phone", (s: SeededSubject) => s.values.phone],
    ["click_id", (s: SeededSubject) => s.values.gclid],
  ] as const)("by %s: every section holds exactly the subject's rows, with their personal data", (kind, valueOf) =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      const { z } = world;
      const held = await heldOf(client, z);
      expect([held.sessions.length, held.events.length, held.consents.length, held.conversions.length]).toEqual([2, 3, 2, 3]);
      const doc = await exportOf(client, world.a.id, kind, valueOf(z));
      const normalized = { visitor_id: z.values.visitor, email: z.values.emailNormalized, phone: z.values.phoneE164, click_id: z.values.gclid }[kind];
      expect(doc).toMatchObject({ site_id: world.a.id, subject: { kind, value: normalized }, exported_at: expect.any(String) });
      // A caller's number is the phone's subject too: its call alone comes with it.
      expect(idsOf(doc)).toEqual({ ...held, calls: (kind === "phone" ? [z.callId, world.phoneOnlyCallId] : [z.callId]).sort() });

      // The data itself, not just ids: URLs with their query strings, props, device data, keys.
      const events = doc.events as Record<string, any>[];
      const consented = events.filter((e) => e.visitor_id === z.values.visitor);
      expect(consented).toHaveLength(2);
      expect(consented[0]).toMatchObject({
        url: expect.stringContaining(`gclid=${z.values.gclid}`), title: `Welcome back, ${z.values.email}`,
        props: { email: z.values.email, phone: z.values.phone }, device: expect.objectContaining({ model: `${z.values.token}-phone` }),
        referrer: expect.stringContaining(z.values.token),
      });
      const hashed = events.find((e) => e.visitor_id === null)!;
      expect(hashed).toMatchObject({ visitor_key: expect.stringMatching(/^h:[0-9a-f]{32}$/), device: null, props: { phone: z.values.phone } });
      expect(doc.sessions).toEqual(expect.arrayContaining([
        expect.objectContaining({ visitor_id: z.values.visitor, click_id: z.values.gclid, landing_url: expect.stringContaining(z.values.gclid) }),
        expect.objectContaining({ visitor_id: null, visitor_key: hashed.visitor_key }),
      ]));
      for (const consent of doc.consents) {
        expect(consent).not.toHaveProperty("visitor_hash");
        expect(consent).toMatchObject({ site_id: world.a.id, analytics_storage: "granted" });
      }
      expect(doc.calls.find((c: any) => c.id === z.callId)).toMatchObject({ caller: z.values.phoneE164, visitor_id: z.values.visitor, gclid: z.values.gclid });
      const sales = Object.fromEntries((doc.sales as any[]).map((s) => [s.id, s]));
      expect(sales[z.saleId]).toMatchObject({
        visitor_id: z.values.visitor, gclid: z.values.gclid,
        email_sha256: sha256(z.values.emailNormalized), phone_sha256: sha256(z.values.phoneE164),
      });
      expect(sales[z.deliveredSaleId]).toMatchObject({ email_sha256: sha256(z.values.emailNormalized), phone_sha256: null });
      expect(sales[z.sealSaleId]).toMatchObject({ call_id: z.callId, email_sha256: null, phone_sha256: null });
      expect((doc.conversions as any[]).map((c) => c.status).sort()).toEqual(["accepted", "pending", "pending"]);
      expect(doc.conversations).toEqual([expect.objectContaining({ id: z.conversationId, call_id: z.callId })]);
      // The subject's data, not the queue's machinery: no lease holder, nor the stage the queue's indexes use.
      for (const conversion of doc.conversions) {
        expect(conversion).not.toHaveProperty("locked_by");
        expect(conversion).not.toHaveProperty("stage");
      }

      // Nothing of the other subject on the site, nor of the twin (same values) on the other site.
      const text = JSON.stringify(doc).toLowerCase();
      expect(text).not.toContain(world.y.values.token);
      const theirs = [...(await heldOf(client, world.y)).events, ...(await heldOf(client, world.twin)).events,
        world.y.saleId, world.twin.saleId, world.y.callId, world.twin.callId, world.twin.conversationId];
      for (const id of theirs) expect({ id, leaked: text.includes(id) }).toEqual({ id, leaked: false });
      for (const section of SECTIONS) {
        for (const row of doc[section]) expect({ section, site: row.site_id }).toEqual({ section, site: world.a.id });
      }
    }));

  test.each([
    ["email", (s: SeededSubject) => s.values.emailNormalized],
    ["email", (s: SeededSubject) => `  ${s.values.email.toUpperCase().replace("@", ".@").replace(/^(.)/, "$1.")}\t`],
    ["phone", (s: SeededSubject) => s.values.phoneE164],
    ["phone", (s: SeededSubject) => `00${s.values.phoneE164.slice(1, 3)} ${s.values.phoneE164.slice(3)}`],
    ["phone", (s: SeededSubject) => `+${s.values.phoneE164.slice(1, 3)} (0)${s.values.phoneE164.slice(3, 6)}-${s.values.phoneE164.slice(6)}`],
  ] as const)("%s written another way (%#) finds the same subject: matched by the normalised hash", (kind, valueOf) =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      const typed = await exportOf(client, world.a.id, kind, kind === "email" ? world.z.values.email : world.z.values.phone);
      const other = await exportOf(client, world.a.id, kind, valueOf(world.z));
      expect(idsOf(other)).toEqual(idsOf(typed));
      expect(idsOf(other).sales).toHaveLength(3);
      expect(other.subject).toEqual(typed.subject);
    }));

  test("a subject nothing is held about gets every section empty; another site's subject is not this site's", () =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      const nobody = subjectValues("nqn");
      for (const [kind, value] of [["visitor_id", nobody.visitor], ["email", nobody.email], ["phone", nobody.phone], ["click_id", nobody.gclid]]) {
        const doc = await exportOf(client, world.a.id, kind, value);
        for (const section of SECTIONS) expect({ kind, section, rows: doc[section] }).toEqual({ kind, section, rows: [] });
      }
      // The same visitor id on site B is B's subject: each site exports its own.
      const onB = await exportOf(client, world.b.id, "visitor_id", world.z.values.visitor);
      const onA = await exportOf(client, world.a.id, "visitor_id", world.z.values.visitor);
      expect(idsOf(onB).events.sort()).toEqual([...world.twin.eventIds].sort());
      expect(idsOf(onA).events.sort()).toEqual([...world.z.eventIds].sort());
    }));

  test.each([
    ["a viewer", "refused (OM403)", "viewerId"], ["an editor", "refused (OM403)", "editorId"], ["a viewer API key", "refused (OM403)", "viewerKey"],
    ["an editor API key", "refused (OM403)", "editorKey"], ["an admin", "allowed", "adminId"], ["the owner", "allowed", "ownerId"],
    ["an admin API key", "allowed", "adminKey"],
  ] as const)("%s is %s, and refused on another site", (_label, outcome, who) =>
    withRootDb(async (client) => {
      const expected = outcome === "allowed" ? null : "OM403";
      const world = await seedWorld(client);
      const identity = who.endsWith("Key") ? { apiKeyId: world[who as "adminKey"].id } : { userId: world[who as "adminId"] };
      await becomeUser(client, identity);
      expect(await sqlState(client, () => exportOf(client, world.a.id, "email", world.z.values.email))).toBe(expected);
      if (expected === null) expect(idsOf(await exportOf(client, world.a.id, "email", world.z.values.email)).sales).toHaveLength(3);
      // Nobody of site A may export from site B.
      expect(await sqlState(client, () => exportOf(client, world.b.id, "email", world.z.values.email))).toBe("OM403");
      await becomeRoot(client);
    }));

  test.each([
    ["an unknown kind", "name", "Zqx Person"], ["a kind in capitals", "EMAIL", "a@b.example"], ["a null kind", null, "a@b.example"],
    ["an email that is not one", "email", "zqx at example"], ["a phone without country code", "phone", "0532 123 45 67"],
    ["a visitor id with a slash", "visitor_id", "v/1"], ["a click id with spaces", "click_id", "Cj0 KCQ"], ["a null value", "visitor_id", null],
  ])("%s is OMSUB", (_label, kind, value) =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      await becomeUser(client, { userId: world.adminId });
      expect(await sqlState(client, () => exportOf(client, world.a.id, kind as string, value))).toBe("OMSUB");
      await becomeRoot(client);
    }));
});

/* ------------------------------------------------------------------ GraphQL */

describe("exportSubjectData through GraphQL", () => {
  let service: TestService;
  let fixture: { siteId: string; adminId: string; editorId: string; subject: SeededSubject };

  beforeAll(async () => {
    const client = await getRootPool().connect();
    try {
      const ownerId = await createUser(client);
      const adminId = await createUser(client);
      const editorId = await createUser(client);
      const site = await createTrackedSite(client, ownerId);
      await addMember(client, site.id, adminId, "admin");
      await addMember(client, site.id, editorId, "editor");
      fixture = { siteId: site.id, adminId, editorId, subject: await seedSubject(client, site, subjectValues("zqh")) };
    } finally {
      client.release();
    }
    service = await startTestService();
  });

  afterAll(async () => {
    await service?.stop();
  });

  const EXPORT = "mutation($s: UUID, $k: String, $v: String) { exportSubjectData(input: {siteId: $s, kind: $k, value: $v}) { result } }";

  test("it is a mutation (an export is audited, so it writes) taking siteId, kind and value and returning JSON", async () => {
    const { body } = await service.graphql(`{ input: __type(name: "ExportSubjectDataInput") { inputFields { name type { name } } }
                                              payload: __type(name: "ExportSubjectDataPayload") { fields { name type { name } } } }`,
      undefined, await tokenFor(fixture.adminId));
    expect(Object.fromEntries(body.data.input.inputFields.map((f: any) => [f.name, f.type.name])))
      .toEqual({ clientMutationId: "String", siteId: "UUID", kind: "String", value: "String" });
    expect(body.data.payload.fields.find((f: any) => f.name === "result").type.name).toBe("JSON");
  });

  test("an admin gets the same document as SQL; an editor is forbidden and the denial is audited without the subject", async () => {
    const { subject } = fixture;
    const reply = await service.graphql(EXPORT, { s: fixture.siteId, k: "email", v: subject.values.email }, await tokenFor(fixture.adminId));
    expect(reply.body.errors).toBeUndefined();
    const doc = reply.body.data.exportSubjectData.result;
    const direct = await exportOf(getRootPool(), fixture.siteId, "email", subject.values.email);
    expect({ ...doc, exported_at: null }).toEqual({ ...direct, exported_at: null });
    // The export itself is on record: who, which kind, the subject only as the site's salted hash.
    const { rows: [access] } = await getRootPool().query(
      `select actor_user_id, target_id, new_values from app_public.audit_log
        where site_id = $1 and action = 'access:export_subject_data' and actor_user_id = $2`, [fixture.siteId, fixture.adminId]);
    expect(access).toEqual({ actor_user_id: fixture.adminId, target_id: "email", new_values: { subject_hash: expect.stringMatching(/^[0-9a-f]{64}$/) } });
    expect(idsOf(doc).events.sort()).toEqual([...subject.eventIds].sort());

    const auditBefore = (await getRootPool().query("select count(*)::int as n from app_public.audit_log where site_id = $1", [fixture.siteId])).rows[0].n;
    const denied = await service.graphql(EXPORT, { s: fixture.siteId, k: "email", v: subject.values.email }, await tokenFor(fixture.editorId));
    expect(denied.body.errors).toEqual([expect.objectContaining({ extensions: { code: "forbidden" } })]);
    expect(denied.body.data?.exportSubjectData ?? null).toBeNull();
    const invalid = await service.graphql(EXPORT, { s: fixture.siteId, k: "ssn", v: "1" }, await tokenFor(fixture.adminId));
    expect(invalid.body.errors).toEqual([expect.objectContaining({ extensions: { code: "invalid_subject" } })]);
    await flushDenials();
    const { rows } = await getRootPool().query(
      "select action, target_table, target_id, old_values, new_values from app_public.audit_log where site_id = $1 order by seq offset $2",
      [fixture.siteId, auditBefore]);
    expect(rows).toEqual([expect.objectContaining({ action: "denied:export_subject_data" })]);
    const text = JSON.stringify(rows).toLowerCase();
    const leaked = (await needlesFor(getRootPool(), fixture.siteId, subject.values)).filter((n) => text.includes(n.needle)).map((n) => n.label);
    expect(leaked).toEqual([]);
  });
});
