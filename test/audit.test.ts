/*
 * The audit log: who changed what (user, API key or a DBA's own SQL), with secrets and personal
 * data kept out, append-only for every role, and a per-site hash chain that verify_audit_chain
 * re-checks and that names the first row an attacker with superuser rights altered or removed.
 */
import pg from "pg";
import {
  addMember, becomeRoot, becomeUser, createApiKey, createSite, createUser, getRootPool, Identity, sqlState, unique,
  withRootDb,
} from "./helpers/db";

const PLATFORM_CHAIN = "00000000-0000-0000-0000-000000000000";

interface AuditRow {
  site_id: string;
  seq: number;
  actor_user_id: string | null;
  actor_api_key_id: string | null;
  actor_db_role: string;
  action: string;
  target_table: string;
  target_id: string | null;
  old_values: Record<string, unknown> | null;
  new_values: Record<string, unknown> | null;
}

interface Verification {
  ok: boolean;
  checked_rows: number;
  first_bad_seq: number | null;
  problem: string | null;
}

/* ------------------------------------------------------------- fixture */

interface Fixture {
  siteId: string;
  ownerId: string;
  adminId: string;
  editorId: string;
  viewerId: string;
  viewerEmail: string;
  newcomerId: string;
  newcomerEmail: string;
  platformAdminId: string;
  adminKey: { id: string; key: string };
  spareKeyId: string;
  otherSiteId: string;
  otherAdminId: string;
  otherAdminKeyId: string;
}

/** One site with a member of every role and an admin API key, plus a second tenant. */
async function makeFixture(client: pg.ClientBase): Promise<Fixture> {
  const viewerEmail = `${unique("viewer")}@example.com`;
  const newcomerEmail = `${unique("newcomer")}@example.com`;
  const ownerId = await createUser(client);
  const adminId = await createUser(client);
  const editorId = await createUser(client);
  const viewerId = await createUser(client, viewerEmail);
  const newcomerId = await createUser(client, newcomerEmail);
  const platformAdminId = await createUser(client, undefined, true);
  const { id: siteId } = await createSite(client, ownerId);
  await addMember(client, siteId, adminId, "admin");
  await addMember(client, siteId, editorId, "editor");
  await addMember(client, siteId, viewerId, "viewer");
  const adminKey = await createApiKey(client, siteId, "admin");
  const { id: spareKeyId } = await createApiKey(client, siteId, "viewer");

  const otherOwnerId = await createUser(client);
  const otherAdminId = await createUser(client);
  const { id: otherSiteId } = await createSite(client, otherOwnerId, "other.example");
  await addMember(client, otherSiteId, otherAdminId, "admin");
  const { id: otherAdminKeyId } = await createApiKey(client, otherSiteId, "admin");
  return {
    siteId, ownerId, adminId, editorId, viewerId, viewerEmail, newcomerId, newcomerEmail, platformAdminId,
    adminKey, spareKeyId, otherSiteId, otherAdminId, otherAdminKeyId,
  };
}

/* ------------------------------------------------------------- helpers */

async function sessionUser(client: pg.ClientBase): Promise<string> {
  return (await client.query("select session_user::text as login")).rows[0].login;
}

/** The last seq of every chain, so a test can pick out exactly the rows its action appended. */
async function chainHeads(client: pg.ClientBase): Promise<Map<string, number>> {
  const { rows } = await client.query("select site_id, max(seq)::int as last from app_public.audit_log group by site_id");
  return new Map(rows.map((r) => [r.site_id as string, r.last as number]));
}

async function rowsSince(client: pg.ClientBase, heads: Map<string, number>): Promise<AuditRow[]> {
  const { rows } = await client.query<AuditRow>(
    `select site_id, seq::int as seq, actor_user_id, actor_api_key_id, actor_db_role, action, target_table,
            target_id, old_values, new_values
       from app_public.audit_log order by site_id, seq`);
  return rows.filter((r) => r.seq > (heads.get(r.site_id) ?? 0));
}

async function chainLength(client: pg.ClientBase, siteId: string): Promise<number> {
  return (await client.query("select count(*)::int as n from app_public.audit_log where site_id = $1", [siteId])).rows[0].n;
}

async function verify(client: pg.ClientBase, siteId: string): Promise<Verification> {
  const { rows } = await client.query<Verification>(
    "select ok, checked_rows::int as checked_rows, first_bad_seq::int as first_bad_seq, problem from app_public.verify_audit_chain($1)",
    [siteId]);
  return rows[0];
}

/** Audit rows (any chain) whose full text contains the needle. */
async function auditRowsContaining(client: pg.ClientBase, needle: string): Promise<number> {
  const { rows } = await client.query(
    "select count(*)::int as n from app_public.audit_log a where strpos(a::text, $1) > 0", [needle]);
  return rows[0].n;
}

/** Runs fn in a savepoint and returns the OM403 error's code and parsed JSON detail. */
async function captureDenial(client: pg.ClientBase, fn: () => Promise<unknown>): Promise<{ code: string | null; detail: Record<string, unknown> }> {
  await client.query("savepoint denial");
  try {
    await fn();
    await client.query("release savepoint denial");
    return { code: null, detail: {} };
  } catch (error) {
    await client.query("rollback to savepoint denial");
    const { code, detail } = error as { code?: string; detail?: string };
    return { code: code ?? "unknown", detail: detail ? JSON.parse(detail) : {} };
  }
}

/* -------------------------------------------------- who is recorded */

type Actor = "owner" | "admin" | "adminKey" | "dba";

function identityOf(fx: Fixture, actor: Exclude<Actor, "dba">): Identity {
  return actor === "adminKey" ? { apiKeyId: fx.adminKey.id } : { userId: actor === "owner" ? fx.ownerId : fx.adminId };
}

function expectedActor(fx: Fixture, actor: Actor): Pick<AuditRow, "actor_user_id" | "actor_api_key_id"> {
  if (actor === "dba") return { actor_user_id: null, actor_api_key_id: null };
  const identity = identityOf(fx, actor);
  return { actor_user_id: identity.userId ?? null, actor_api_key_id: identity.apiKeyId ?? null };
}

interface TriggerCase {
  table: string;
  action: "insert" | "update" | "delete";
  actor: Actor;
  how: string;
  /** Makes the change (already acting as `actor`); returns the chain and target id it must be recorded under. */
  change(client: pg.ClientBase, fx: Fixture): Promise<{ chain: string; targetId: string }>;
  old: Record<string, unknown> | null;
  new: Record<string, unknown> | null;
}

const ANY_TIME = expect.any(String);
const REDACTED = "[redacted]";

const TRIGGER_CASES: TriggerCase[] = [
  {
    table: "site_members", action: "insert", actor: "owner", how: "add_site_member",
    async change(c, fx) {
      await c.query("select app_public.add_site_member($1, $2, 'editor')", [fx.siteId, fx.newcomerEmail]);
      return { chain: fx.siteId, targetId: fx.newcomerId };
    },
    old: null, new: { site_id: "<site>", user_id: "<newcomer>", role: "editor" },
  },
  {
    table: "site_members", action: "update", actor: "adminKey", how: "add_site_member on an existing member",
    async change(c, fx) {
      await c.query("select app_public.add_site_member($1, $2, 'editor')", [fx.siteId, fx.viewerEmail]);
      return { chain: fx.siteId, targetId: fx.viewerId };
    },
    old: { role: "viewer" }, new: { role: "editor" },
  },
  {
    table: "site_members", action: "delete", actor: "admin", how: "remove_site_member",
    async change(c, fx) {
      await c.query("select app_public.remove_site_member($1, $2)", [fx.siteId, fx.viewerId]);
      return { chain: fx.siteId, targetId: fx.viewerId };
    },
    old: { user_id: "<viewer>", role: "viewer" }, new: null,
  },
  {
    table: "site_members", action: "delete", actor: "dba", how: "direct SQL",
    async change(c, fx) {
      await c.query("delete from app_public.site_members where site_id = $1 and user_id = $2", [fx.siteId, fx.editorId]);
      return { chain: fx.siteId, targetId: fx.editorId };
    },
    old: { role: "editor" }, new: null,
  },
  {
    table: "api_keys", action: "insert", actor: "admin", how: "create_api_key",
    async change(c, fx) {
      const { rows } = await c.query("select api_key_id from app_public.create_api_key($1, 'viewer', 'crm')", [fx.siteId]);
      return { chain: fx.siteId, targetId: rows[0].api_key_id };
    },
    old: null, new: { role: "viewer", name: "crm", created_by: "<admin>", revoked_at: null },
  },
  {
    table: "api_keys", action: "insert", actor: "adminKey", how: "create_api_key",
    async change(c, fx) {
      const { rows } = await c.query("select api_key_id from app_public.create_api_key($1, 'editor', 'script')", [fx.siteId]);
      return { chain: fx.siteId, targetId: rows[0].api_key_id };
    },
    old: null, new: { role: "editor", name: "script", created_by: null },
  },
  {
    table: "api_keys", action: "update", actor: "adminKey", how: "revoke_api_key",
    async change(c, fx) {
      await c.query("select app_public.revoke_api_key($1)", [fx.spareKeyId]);
      return { chain: fx.siteId, targetId: fx.spareKeyId };
    },
    old: { revoked_at: null }, new: { revoked_at: ANY_TIME },
  },
  {
    table: "api_keys", action: "delete", actor: "dba", how: "direct SQL",
    async change(c, fx) {
      await c.query("delete from app_public.api_keys where id = $1", [fx.spareKeyId]);
      return { chain: fx.siteId, targetId: fx.spareKeyId };
    },
    old: { id: "<spareKey>", role: "viewer" }, new: null,
  },
  {
    table: "sites", action: "insert", actor: "owner", how: "app_public.create_site",
    async change(c) {
      const { rows } = await c.query("select id from app_public.create_site('Audited shop', 'audited.example')");
      return { chain: rows[0].id, targetId: rows[0].id };
    },
    old: null, new: { name: "Audited shop", domain: "audited.example" },
  },
  {
    table: "sites", action: "update", actor: "admin", how: "update_site_settings",
    async change(c, fx) {
      await c.query("select app_public.update_site_settings($1, timezone => 'Europe/Istanbul')", [fx.siteId]);
      return { chain: fx.siteId, targetId: fx.siteId };
    },
    old: { timezone: "UTC" }, new: { timezone: "Europe/Istanbul" },
  },
  {
    table: "sites", action: "update", actor: "adminKey", how: "update_site_settings",
    async change(c, fx) {
      await c.query("select app_public.update_site_settings($1, consent_mode => 'implied')", [fx.siteId]);
      return { chain: fx.siteId, targetId: fx.siteId };
    },
    old: { consent_mode: "required" }, new: { consent_mode: "implied" },
  },
  {
    table: "sites", action: "update", actor: "dba", how: "direct SQL",
    async change(c, fx) {
      await c.query("update app_public.sites set currency = 'EUR' where id = $1", [fx.siteId]);
      return { chain: fx.siteId, targetId: fx.siteId };
    },
    old: { currency: "USD" }, new: { currency: "EUR" },
  },
  {
    table: "sites", action: "delete", actor: "owner", how: "delete_site",
    async change(c, fx) {
      await c.query("select app_public.delete_site($1)", [fx.siteId]);
      return { chain: fx.siteId, targetId: fx.siteId };
    },
    old: { id: "<site>" }, new: null,
  },
  {
    table: "call_event_secrets", action: "insert", actor: "owner", how: "app_public.create_site",
    async change(c) {
      const { rows } = await c.query("select id from app_public.create_site('Secret shop', 'secret.example')");
      return { chain: rows[0].id, targetId: rows[0].id };
    },
    old: null, new: { current_secret: REDACTED, previous_secret: REDACTED },
  },
  {
    table: "call_event_secrets", action: "update", actor: "dba", how: "a rotation in direct SQL",
    async change(c, fx) {
      await c.query(
        `update app_private.call_event_secrets
            set previous_secret = current_secret, current_secret = app_private.new_call_event_secret(),
                rotated_at = clock_timestamp()
          where site_id = $1`, [fx.siteId]);
      return { chain: fx.siteId, targetId: fx.siteId };
    },
    // The new side may also say that a redacted value changed ("[redacted, changed]"-style marker).
    old: { current_secret: REDACTED, previous_secret: REDACTED },
    new: { current_secret: expect.stringMatching(/^\[redacted/), previous_secret: expect.stringMatching(/^\[redacted/) },
  },
  {
    table: "call_event_secrets", action: "delete", actor: "owner", how: "delete_site (cascade)",
    async change(c, fx) {
      await c.query("select app_public.delete_site($1)", [fx.siteId]);
      return { chain: fx.siteId, targetId: fx.siteId };
    },
    old: { current_secret: REDACTED }, new: null,
  },
  {
    table: "users", action: "update", actor: "dba", how: "granting is_platform_admin",
    async change(c, fx) {
      await c.query("update app_public.users set is_platform_admin = true where id = $1", [fx.newcomerId]);
      return { chain: PLATFORM_CHAIN, targetId: fx.newcomerId };
    },
    old: { is_platform_admin: false, email: REDACTED }, new: { is_platform_admin: true, email: REDACTED },
  },
  {
    table: "users", action: "update", actor: "dba", how: "revoking is_platform_admin",
    async change(c, fx) {
      await c.query("update app_public.users set is_platform_admin = false where id = $1", [fx.platformAdminId]);
      return { chain: PLATFORM_CHAIN, targetId: fx.platformAdminId };
    },
    old: { is_platform_admin: true }, new: { is_platform_admin: false },
  },
];

/** Replaces "<site>"-style placeholders in an expectation with the fixture's ids. */
function resolve(expected: Record<string, unknown> | null, fx: Fixture): Record<string, unknown> | null {
  if (!expected) return null;
  const ids: Record<string, string> = {
    "<site>": fx.siteId, "<newcomer>": fx.newcomerId, "<viewer>": fx.viewerId, "<admin>": fx.adminId, "<spareKey>": fx.spareKeyId,
  };
  return Object.fromEntries(Object.entries(expected).map(([k, v]) => [k, typeof v === "string" && v in ids ? ids[v] : v]));
}

describe("audit triggers record the change and its actor", () => {
  test.each(TRIGGER_CASES.map((c) => [`${c.table} ${c.action} by ${c.actor} (${c.how})`, c] as const))("%s", (_name, tc) =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      const login = await sessionUser(client);
      const heads = await chainHeads(client);
      if (tc.actor !== "dba") await becomeUser(client, identityOf(fx, tc.actor));
      const { chain, targetId } = await tc.change(client, fx);
      await becomeRoot(client);

      const recorded = (await rowsSince(client, heads))
        .filter((r) => r.target_table === tc.table && r.action === tc.action);
      expect(recorded).toHaveLength(1);
      const [row] = recorded;
      expect(row).toMatchObject({ site_id: chain, target_id: targetId, actor_db_role: login, ...expectedActor(fx, tc.actor) });
      const old = resolve(tc.old, fx);
      const next = resolve(tc.new, fx);
      if (old) expect(row.old_values).toMatchObject(old); else expect(row.old_values).toBeNull();
      if (next) expect(row.new_values).toMatchObject(next); else expect(row.new_values).toBeNull();
      // Noise columns (updated_at, last_used_at) never reach the log at all.
      expect(JSON.stringify([row.old_values, row.new_values])).not.toMatch(/"(updated_at|last_used_at)"/);
    }));

  test("an update that changes nothing an auditor sees is not recorded", () =>
    withRootDb(async (client) => {
      // Guards the no-op skip: re-saving the same settings only moves updated_at (left out of the log).
      const fx = await makeFixture(client);
      const before = await chainLength(client, fx.siteId);
      await becomeUser(client, { userId: fx.adminId });
      await client.query("select app_public.update_site_settings($1, timezone => 'UTC')", [fx.siteId]);
      await becomeRoot(client);
      expect(await chainLength(client, fx.siteId)).toBe(before);
    }));

  test("a rotation that changes only the secret is still recorded", () =>
    withRootDb(async (client) => {
      // A secret replaced without touching rotated_at is still a change to a credential; its
      // value is redacted, but the fact that it changed must reach the chain.
      const fx = await makeFixture(client);
      const heads = await chainHeads(client);
      await client.query(
        "update app_private.call_event_secrets set current_secret = app_private.new_call_event_secret() where site_id = $1",
        [fx.siteId]);
      const recorded = (await rowsSince(client, heads)).filter((r) => r.target_table === "call_event_secrets");
      expect(recorded.map((r) => r.action)).toEqual(["update"]);
    }));

  test("authenticating with an API key adds no audit row", () =>
    withRootDb(async (client) => {
      // The once-a-minute last_used_at tick is bookkeeping, not a change an auditor reviews
      // (tg__audit says so); recording it would flood the chain of every busy integration.
      const fx = await makeFixture(client);
      const before = await chainLength(client, fx.siteId);
      const { rows } = await client.query("select api_key_id from app_private.authenticate_api_key($1)", [fx.adminKey.key]);
      expect(rows).toEqual([{ api_key_id: fx.adminKey.id }]);
      expect(await chainLength(client, fx.siteId)).toBe(before);
    }));
});

/* ------------------------------------------------------- redaction */

describe("the audit log holds no secrets and no personal data", () => {
  test("the call-event secret, current or previous, never appears in any audit row", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      const secretOf = async () => (await client.query(
        "select current_secret from app_private.call_event_secrets where site_id = $1", [fx.siteId])).rows[0].current_secret as string;
      const first = await secretOf();
      await client.query(
        `update app_private.call_event_secrets set previous_secret = current_secret,
                current_secret = app_private.new_call_event_secret(), rotated_at = clock_timestamp() where site_id = $1`,
        [fx.siteId]);
      const second = await secretOf();
      await becomeUser(client, { userId: fx.ownerId });
      await client.query("select app_public.delete_site($1)", [fx.siteId]);
      await becomeRoot(client);

      // The secrets' rows were audited (insert, rotation, delete), so the search below has something to miss.
      const { rows } = await client.query(
        "select action from app_public.audit_log where site_id = $1 and target_table = 'call_event_secrets' order by seq", [fx.siteId]);
      expect(rows.map((r) => r.action)).toEqual(["insert", "update", "delete"]);
      expect(first).toMatch(/^whsec_[0-9a-f]{64}$/);
      expect(await auditRowsContaining(client, first)).toBe(0);
      expect(await auditRowsContaining(client, second)).toBe(0);
      // Even the random part alone (no prefix) is absent.
      expect(await auditRowsContaining(client, second.slice("whsec_".length))).toBe(0);
    }));

  test("an API key's text and hash never appear in any audit row", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await becomeUser(client, { userId: fx.adminId });
      const { rows: [created] } = await client.query("select api_key_id, key from app_public.create_api_key($1, 'editor', 'leak probe')", [fx.siteId]);
      await client.query("select app_public.revoke_api_key($1)", [created.api_key_id]);
      await becomeRoot(client);
      const { rows: [hash] } = await client.query(
        "select encode(key_hash, 'hex') as hex from app_private.api_key_hashes where api_key_id = $1", [created.api_key_id]);

      expect(await chainLength(client, fx.siteId)).toBeGreaterThan(0);
      expect(await auditRowsContaining(client, created.api_key_id)).toBe(2);  // insert + revoke: the key is audited by id
      expect(await auditRowsContaining(client, created.key)).toBe(0);
      expect(await auditRowsContaining(client, created.key.slice(10))).toBe(0);  // beyond the displayed prefix
      expect(await auditRowsContaining(client, hash.hex)).toBe(0);
      expect(await auditRowsContaining(client, fx.adminKey.key)).toBe(0);
    }));

  test("users' email addresses and names never appear in any audit row", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await client.query("update app_public.users set display_name = 'Ayşe Yılmaz' where id = $1", [fx.newcomerId]);
      // Membership by email, a role change, a removal, and a platform-admin grant all touch this user.
      await becomeUser(client, { userId: fx.ownerId });
      await client.query("select app_public.add_site_member($1, $2, 'viewer')", [fx.siteId, fx.newcomerEmail]);
      await client.query("select app_public.add_site_member($1, $2, 'admin')", [fx.siteId, fx.newcomerEmail]);
      await client.query("select app_public.remove_site_member($1, $2)", [fx.siteId, fx.newcomerId]);
      await becomeRoot(client);
      await client.query("update app_public.users set is_platform_admin = true where id = $1", [fx.newcomerId]);

      expect(await auditRowsContaining(client, fx.newcomerId)).toBe(4);
      expect(await auditRowsContaining(client, fx.newcomerEmail)).toBe(0);
      expect(await auditRowsContaining(client, fx.newcomerEmail.split("@")[0])).toBe(0);
      expect(await auditRowsContaining(client, "Ayşe")).toBe(0);
      expect(await auditRowsContaining(client, fx.viewerEmail)).toBe(0);
    }));
});

/* ---------------------------------------------------- append-only */

const TAMPERING_STATEMENTS: Record<string, string> = {
  update: "update app_public.audit_log set action = 'forged' where site_id = $1",
  delete: "delete from app_public.audit_log where site_id = $1",
  truncate: "truncate app_public.audit_log",
};

describe("audit_log is append-only for every role", () => {
  const cases: Array<[role: string, statement: string, expected: string]> = [
    ...Object.keys(TAMPERING_STATEMENTS).map((s) => ["superuser", s, "OMIMM"] as [string, string, string]),
    ...Object.keys(TAMPERING_STATEMENTS).map((s) => ["opsmantik_owner", s, "OMIMM"] as [string, string, string]),
    // The visitor is stopped earlier, by privileges, even as an admin of the site.
    ...Object.keys(TAMPERING_STATEMENTS).map((s) => ["visitor (site admin)", s, "42501"] as [string, string, string]),
    ["visitor (site admin)", "insert", "42501"],
  ];

  test.each(cases)("%s: %s refused with %s", (role, statement, expected) =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      const rowsBefore = await chainLength(client, fx.siteId);
      expect(rowsBefore).toBeGreaterThan(0);  // row triggers only fire when a row matches
      if (role === "opsmantik_owner") await client.query("set local role opsmantik_owner");
      if (role.startsWith("visitor")) await becomeUser(client, { userId: fx.adminId });
      const sql = statement === "insert"
        ? "insert into app_public.audit_log (site_id, seq, actor_db_role, action, target_table, row_hash) values ($1, 999, 'x', 'forged', 'sites', '\\x00')"
        : TAMPERING_STATEMENTS[statement];
      const params = sql.includes("$1") ? [fx.siteId] : [];
      expect(await sqlState(client, () => client.query(sql, params))).toBe(expected);
      await becomeRoot(client);
      expect(await chainLength(client, fx.siteId)).toBe(rowsBefore);
    }));
});

/* --------------------------------------------------- verification */

interface Tampering {
  name: string;
  /** SQL run as superuser with triggers off; $1 = site id, $2 = the seq to tamper with. */
  sql: string[];
  /** Which seq to tamper with, given the chain's length. */
  seq(length: number): number;
  firstBadSeq(seq: number, length: number): number;
  problem: RegExp;
}

const TAMPERINGS: Tampering[] = [
  {
    name: "a middle row's new_values altered",
    sql: [`update app_public.audit_log set new_values = '{"role": "owner"}' where site_id = $1 and seq = $2`],
    seq: (n) => Math.ceil(n / 2), firstBadSeq: (k) => k, problem: /does not match its hash/,
  },
  {
    name: "a middle row deleted",
    sql: ["delete from app_public.audit_log where site_id = $1 and seq = $2"],
    seq: (n) => Math.ceil(n / 2), firstBadSeq: (k) => k, problem: /missing/,
  },
  {
    name: "the tail row deleted",
    sql: ["delete from app_public.audit_log where site_id = $1 and seq = $2"],
    seq: (n) => n, firstBadSeq: (k) => k, problem: /missing from the end/,
  },
  {
    name: "a middle row altered and its own hash recomputed, but not the next row's prev_hash",
    sql: [
      `update app_public.audit_log set actor_db_role = 'nobody' where site_id = $1 and seq = $2`,
      `update app_public.audit_log a set row_hash = app_private.audit_row_hash(a.prev_hash, a) where site_id = $1 and seq = $2`,
    ],
    seq: (n) => Math.ceil(n / 2), firstBadSeq: (k) => k + 1, problem: /prev_hash/,
  },
  {
    name: "a forged row appended with a consistent hash but no chain-head update",
    sql: [
      `insert into app_public.audit_log (site_id, seq, occurred_at, actor_db_role, action, target_table, target_id, prev_hash, row_hash)
       select a.site_id, $2::bigint, date_trunc('microseconds', clock_timestamp()), 'nobody', 'insert', 'site_members', 'x', a.row_hash, '\\x00'
         from app_public.audit_log a where a.site_id = $1 and a.seq = $2::bigint - 1`,
      `update app_public.audit_log a set row_hash = app_private.audit_row_hash(a.prev_hash, a) where site_id = $1 and seq = $2`,
    ],
    seq: (n) => n + 1, firstBadSeq: (k) => k, problem: /\S/,
  },
];

describe("verify_audit_chain", () => {
  test("an untouched chain is ok and every row is checked", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      const length = await chainLength(client, fx.siteId);
      // site, secret, four members, two keys
      expect(length).toBe(8);
      expect(await verify(client, fx.siteId)).toEqual({ ok: true, checked_rows: length, first_bad_seq: null, problem: null });
      // The platform chain after a platform-level change, and the site's chain after one more write.
      await client.query("update app_public.users set is_platform_admin = true where id = $1", [fx.newcomerId]);
      expect(await verify(client, PLATFORM_CHAIN)).toMatchObject({ ok: true, first_bad_seq: null });
      await becomeUser(client, { userId: fx.adminId });
      await client.query("select app_public.update_site_settings($1, name => 'Renamed')", [fx.siteId]);
      await becomeRoot(client);
      expect(await verify(client, fx.siteId)).toEqual({ ok: true, checked_rows: length + 1, first_bad_seq: null, problem: null });
    }));

  test.each(TAMPERINGS.map((t) => [t.name, t] as const))("detects tampering by a superuser: %s", (_name, tampering) =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      const length = await chainLength(client, fx.siteId);
      const seq = tampering.seq(length);
      // Replica mode switches off the append-only triggers: what a superuser bent on hiding something would do.
      await client.query("set local session_replication_role = replica");
      for (const sql of tampering.sql) {
        const { rowCount } = await client.query(sql, [fx.siteId, seq]);
        expect(rowCount).toBe(1);
      }
      await client.query("set local session_replication_role = origin");

      const firstBad = tampering.firstBadSeq(seq, length);
      const result = await verify(client, fx.siteId);
      expect(result).toMatchObject({ ok: false, first_bad_seq: firstBad, checked_rows: firstBad - 1 });
      expect(result.problem).toMatch(tampering.problem);
      // The other tenant's chain is untouched and still verifies.
      expect(await verify(client, fx.otherSiteId)).toMatchObject({ ok: true });
    }));

  const CALLERS: Array<[who: string, expected: "ok" | "OM403", identity: (fx: Fixture) => Identity]> = [
    ["the owner", "ok", (fx) => ({ userId: fx.ownerId })],
    ["an admin of the site", "ok", (fx) => ({ userId: fx.adminId })],
    ["an admin API key of the site", "ok", (fx) => ({ apiKeyId: fx.adminKey.id })],
    ["a platform admin", "ok", (fx) => ({ userId: fx.platformAdminId })],
    ["an editor of the site", "OM403", (fx) => ({ userId: fx.editorId })],
    ["an admin of another site", "OM403", (fx) => ({ userId: fx.otherAdminId })],
    ["an admin API key of another site", "OM403", (fx) => ({ apiKeyId: fx.otherAdminKeyId })],
    ["an anonymous request", "OM403", () => ({})],
  ];

  test.each(CALLERS)("called as a visitor by %s: %s", (_who, expected, identity) =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      const length = await chainLength(client, fx.siteId);
      await becomeUser(client, identity(fx));
      if (expected === "ok") {
        expect(await verify(client, fx.siteId)).toEqual({ ok: true, checked_rows: length, first_bad_seq: null, problem: null });
      } else {
        expect(await sqlState(client, () => verify(client, fx.siteId))).toBe("OM403");
      }
    }));

  test("a site admin may not verify the platform chain; a platform admin may", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await becomeUser(client, { userId: fx.adminId });
      expect(await sqlState(client, () => verify(client, PLATFORM_CHAIN))).toBe("OM403");
      await becomeUser(client, { userId: fx.platformAdminId });
      expect(await verify(client, PLATFORM_CHAIN)).toMatchObject({ ok: true });
    }));
});

/* ------------------------------------------------- denied attempts */

describe("denied attempts are appended to the target's chain", () => {
  test("a viewer's refused settings change, recorded from the OM403 detail", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      const login = await sessionUser(client);
      const before = await chainLength(client, fx.siteId);
      await becomeUser(client, { userId: fx.viewerId });
      const denial = await captureDenial(client, () =>
        client.query("select app_public.update_site_settings($1, consent_mode => 'implied')", [fx.siteId]));
      expect(denial.code).toBe("OM403");
      await becomeRoot(client);

      const { rows: [{ seq }] } = await client.query("select app_private.record_denied_attempt($1)::int as seq", [denial.detail]);
      expect(seq).toBe(before + 1);
      const [row] = (await rowsSince(client, new Map([[fx.siteId, before]]))).filter((r) => r.site_id === fx.siteId);
      expect(row).toMatchObject({
        seq: before + 1, action: "denied:update", target_table: "sites", target_id: fx.siteId,
        actor_user_id: fx.viewerId, actor_api_key_id: null, actor_db_role: login, old_values: null,
      });
      expect(await verify(client, fx.siteId)).toEqual({ ok: true, checked_rows: before + 1, first_bad_seq: null, problem: null });
    }));

  test("an API key's refused attempt on another tenant goes to that tenant's chain, naming the key", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      const before = await chainLength(client, fx.otherSiteId);
      await becomeUser(client, { apiKeyId: fx.adminKey.id });
      const denial = await captureDenial(client, () => client.query("select app_public.create_api_key($1, 'admin')", [fx.otherSiteId]));
      expect(denial.code).toBe("OM403");
      await becomeRoot(client);

      await client.query("select app_private.record_denied_attempt($1)", [denial.detail]);
      const [row] = (await rowsSince(client, new Map([[fx.otherSiteId, before]]))).filter((r) => r.site_id === fx.otherSiteId);
      expect(row).toMatchObject({
        action: "denied:insert", target_table: "api_keys", actor_user_id: null, actor_api_key_id: fx.adminKey.id,
      });
      expect(await verify(client, fx.otherSiteId)).toMatchObject({ ok: true, checked_rows: before + 1 });
    }));

  test("a probe of an unknown site id goes to the platform chain", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      const unknownSite = (await client.query("select gen_random_uuid() as id")).rows[0].id as string;
      const heads = await chainHeads(client);
      await becomeUser(client, { userId: fx.adminId });
      const denial = await captureDenial(client, () => client.query("select app_public.delete_site($1)", [unknownSite]));
      expect(denial.code).toBe("OM403");
      await becomeRoot(client);

      await client.query("select app_private.record_denied_attempt($1)", [denial.detail]);
      const appended = await rowsSince(client, heads);
      expect(appended).toHaveLength(1);
      expect(appended[0]).toMatchObject({
        site_id: PLATFORM_CHAIN, action: "denied:delete", target_table: "sites", target_id: unknownSite,
        actor_user_id: fx.adminId, new_values: { requested_site_id: unknownSite },
      });
      expect(await verify(client, PLATFORM_CHAIN)).toMatchObject({ ok: true, first_bad_seq: null });
    }));
});

/* ----------------------------------------------------- concurrency */

describe("concurrent writers of one chain", () => {
  const WRITERS = 20;

  test(`${WRITERS} committed settings changes in parallel leave seq 1..N without gaps and a valid chain`, async () => {
    const pool = getRootPool();
    // Committed on purpose: only separate, committed transactions contend for the chain head.
    const setup = await pool.connect();
    const { ownerId, siteId, before } = await (async () => {
      try {
        const ownerId = await createUser(setup);
        const siteId = (await createSite(setup, ownerId, "race.example")).id;
        return { ownerId, siteId, before: await chainLength(setup, siteId) };
      } finally {
        setup.release();
      }
    })();

    const changeSettings = async (i: number) => {
      const client = await pool.connect();
      try {
        await client.query("begin");
        await becomeUser(client, { userId: ownerId });
        await client.query("select app_public.update_site_settings($1, name => $2)", [siteId, `Race ${i}`]);
        await client.query("commit");
      } catch (error) {
        await client.query("rollback");
        throw error;
      } finally {
        client.release();
      }
    };
    await Promise.all(Array.from({ length: WRITERS }, (_, i) => changeSettings(i)));

    const { rows } = await pool.query(
      "select seq::int as seq, action, new_values ->> 'name' as name from app_public.audit_log where site_id = $1 order by seq", [siteId]);
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: before + WRITERS }, (_, i) => i + 1));
    const names = rows.filter((r) => r.action === "update").map((r) => r.name).sort();
    expect(names).toEqual(Array.from({ length: WRITERS }, (_, i) => `Race ${i}`).sort());
    const result = (await pool.query(
      "select ok, checked_rows::int as checked_rows, first_bad_seq from app_public.verify_audit_chain($1)", [siteId])).rows[0];
    expect(result).toEqual({ ok: true, checked_rows: before + WRITERS, first_bad_seq: null });
  });
});
