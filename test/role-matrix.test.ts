/*
 * Who may do what, as one table: rows are actions, columns are actors, each cell allowed or
 * denied. Every cell runs as the visitor role, the way a GraphQL request runs, in a savepoint
 * that is rolled back so no cell sees another's writes. Denied writes must raise OM403 (or
 * 42501 where row-level security refuses); denied reads must return zero rows, never an error.
 * The same actions against another tenant's site are denied to everyone but a platform admin.
 */
import pg from "pg";
import {
  addMember, becomeRoot, becomeUser, createApiKey, createSite, createUser, Identity, sqlState, unique, withRootDb,
} from "./helpers/db";

const ACTORS = [
  "owner", "admin", "editor", "viewer", "outsider", "platformAdmin",
  "adminKey", "editorKey", "viewerKey", "revokedKey", "anonymous",
] as const;
type ActorName = (typeof ACTORS)[number];

const Y = "allowed";
const N = "denied";
type Expected = typeof Y | typeof N;

/* ------------------------------------------------------------- fixture */

/** A site as seen by the actions: members and a key that actions may target. */
interface Tenant {
  siteId: string;
  spareEditorId: string;
  spareAdminId: string;
  spareAdminEmail: string;
  spareKeyId: string;
}

interface Fixture {
  own: Tenant;
  other: Tenant;
  ownerId: string;
  /** A user with no membership anywhere, for actions that add a member. */
  newcomerId: string;
  newcomerEmail: string;
  actors: Record<ActorName, Identity>;
}

async function makeTenant(client: pg.ClientBase, ownerId: string, domain: string): Promise<Tenant> {
  const spareAdminEmail = `${unique("spare-admin")}@example.com`;
  const spareEditorId = await createUser(client);
  const spareAdminId = await createUser(client, spareAdminEmail);
  const { id: siteId } = await createSite(client, ownerId, domain);
  await addMember(client, siteId, spareEditorId, "editor");
  await addMember(client, siteId, spareAdminId, "admin");
  const { id: spareKeyId } = await createApiKey(client, siteId, "viewer");
  return { siteId, spareEditorId, spareAdminId, spareAdminEmail, spareKeyId };
}

async function makeFixture(client: pg.ClientBase): Promise<Fixture> {
  const ownerId = await createUser(client);
  const own = await makeTenant(client, ownerId, "own.example");
  const other = await makeTenant(client, await createUser(client), "other.example");

  const member = async (role: string) => {
    const userId = await createUser(client);
    await addMember(client, own.siteId, userId, role);
    return { userId };
  };
  const key = async (role: string) => ({ apiKeyId: (await createApiKey(client, own.siteId, role)).id });
  const revokedKey = await key("admin");
  await client.query("update app_public.api_keys set revoked_at = now() where id = $1", [revokedKey.apiKeyId]);
  const newcomerEmail = `${unique("newcomer")}@example.com`;

  return {
    own, other, ownerId,
    newcomerId: await createUser(client, newcomerEmail),
    newcomerEmail,
    actors: {
      owner: { userId: ownerId },
      admin: await member("admin"),
      editor: await member("editor"),
      viewer: await member("viewer"),
      outsider: { userId: await createUser(client) },
      platformAdmin: { userId: await createUser(client, undefined, true) },
      adminKey: await key("admin"),
      editorKey: await key("editor"),
      viewerKey: await key("viewer"),
      revokedKey,
      anonymous: {},
    },
  };
}

/* ------------------------------------------------------------- actions */

/**
 * How an action is refused: reads (and updates, which RLS filters silently) return zero rows;
 * write functions raise OM403; direct inserts fail RLS's with-check (42501).
 */
type Denial = "zero rows" | "OM403" | "42501";

interface Action {
  deniedBy: Denial;
  /** Performs the action on the tenant; true when its effect happened. */
  run(client: pg.ClientBase, tenant: Tenant, fx: Fixture): Promise<boolean>;
}

const count = async (client: pg.ClientBase, sql: string, tenant: Tenant) =>
  (await client.query(sql, [tenant.siteId])).rowCount! > 0;

const ACTIONS: Record<string, Action> = {
  "read the site row": {
    deniedBy: "zero rows",
    run: (c, t) => count(c, "select id from app_public.sites where id = $1", t),
  },
  "read site_members": {
    deniedBy: "zero rows",
    run: (c, t) => count(c, "select user_id from app_public.site_members where site_id = $1", t),
  },
  "read api_keys": {
    deniedBy: "zero rows",
    run: (c, t) => count(c, "select id from app_public.api_keys where site_id = $1", t),
  },
  "read audit_log": {
    deniedBy: "zero rows",
    run: (c, t) => count(c, "select seq from app_public.audit_log where site_id = $1", t),
  },
  "update_site_settings": {
    deniedBy: "OM403",
    async run(c, t) {
      const { rows } = await c.query("select s.name from app_public.update_site_settings($1, name => 'Renamed') s", [t.siteId]);
      return rows[0]?.name === "Renamed";
    },
  },
  "add_site_member as editor": {
    deniedBy: "OM403",
    async run(c, t, fx) {
      const { rows } = await c.query("select m.role from app_public.add_site_member($1, $2, 'editor') m", [t.siteId, fx.newcomerEmail]);
      return rows[0]?.role === "editor";
    },
  },
  "add_site_member as admin": {
    deniedBy: "OM403",
    async run(c, t, fx) {
      const { rows } = await c.query("select m.role from app_public.add_site_member($1, $2, 'admin') m", [t.siteId, fx.newcomerEmail]);
      return rows[0]?.role === "admin";
    },
  },
  // Changing an admin's role is managing an admin, whatever the new role: owners only.
  "add_site_member demoting an admin to viewer": {
    deniedBy: "OM403",
    async run(c, t) {
      const { rows } = await c.query("select m.role from app_public.add_site_member($1, $2, 'viewer') m", [t.siteId, t.spareAdminEmail]);
      return rows[0]?.role === "viewer";
    },
  },
  "remove_site_member of an editor": {
    deniedBy: "OM403",
    async run(c, t) {
      return (await c.query("select app_public.remove_site_member($1, $2) as removed", [t.siteId, t.spareEditorId])).rows[0].removed;
    },
  },
  "remove_site_member of an admin": {
    deniedBy: "OM403",
    async run(c, t) {
      return (await c.query("select app_public.remove_site_member($1, $2) as removed", [t.siteId, t.spareAdminId])).rows[0].removed;
    },
  },
  "create_api_key": {
    deniedBy: "OM403",
    async run(c, t) {
      const { rows } = await c.query("select k.key from app_public.create_api_key($1, 'viewer', 'matrix') k", [t.siteId]);
      return typeof rows[0]?.key === "string";
    },
  },
  "revoke_api_key": {
    deniedBy: "OM403",
    async run(c, t) {
      const { rows } = await c.query("select k.revoked_at from app_public.revoke_api_key($1) k", [t.spareKeyId]);
      return rows[0]?.revoked_at != null;
    },
  },
  "delete_site": {
    deniedBy: "OM403",
    async run(c, t) {
      return (await c.query("select app_public.delete_site($1) as deleted", [t.siteId])).rows[0].deleted;
    },
  },
  // The second wall: the visitor's table grants exist, and RLS alone must hold them back.
  "direct insert into site_members (viewer)": {
    deniedBy: "42501",
    async run(c, t, fx) {
      return (await c.query("insert into app_public.site_members (site_id, user_id, role) values ($1, $2, 'viewer')",
        [t.siteId, fx.newcomerId])).rowCount === 1;
    },
  },
  "direct update of sites": {
    deniedBy: "zero rows",
    async run(c, t) {
      return (await c.query("update app_public.sites set name = 'Hijacked' where id = $1", [t.siteId])).rowCount === 1;
    },
  },
};

/* -------------------------------------------------------------- matrix */

// Expected on the actors' own site.
const OWN_SITE: Record<keyof typeof ACTIONS, Expected[]> = {
  //                                              owner admin editor viewer outsdr pAdmin aKey eKey vKey revKey anon
  "read the site row":                           [Y,    Y,    Y,     Y,     N,     Y,     Y,   Y,   Y,   N,     N],
  "read site_members":                           [Y,    Y,    Y,     Y,     N,     Y,     Y,   Y,   Y,   N,     N],
  "read api_keys":                               [Y,    Y,    N,     N,     N,     Y,     Y,   N,   N,   N,     N],
  "read audit_log":                              [Y,    Y,    N,     N,     N,     Y,     Y,   N,   N,   N,     N],
  "update_site_settings":                        [Y,    Y,    N,     N,     N,     Y,     Y,   N,   N,   N,     N],
  "add_site_member as editor":                   [Y,    Y,    N,     N,     N,     Y,     Y,   N,   N,   N,     N],
  "add_site_member as admin":                    [Y,    N,    N,     N,     N,     Y,     N,   N,   N,   N,     N],
  "add_site_member demoting an admin to viewer": [Y,    N,    N,     N,     N,     Y,     N,   N,   N,   N,     N],
  "remove_site_member of an editor":             [Y,    Y,    N,     N,     N,     Y,     Y,   N,   N,   N,     N],
  "remove_site_member of an admin":              [Y,    N,    N,     N,     N,     Y,     N,   N,   N,   N,     N],
  "create_api_key":                              [Y,    Y,    N,     N,     N,     Y,     Y,   N,   N,   N,     N],
  "revoke_api_key":                              [Y,    Y,    N,     N,     N,     Y,     Y,   N,   N,   N,     N],
  "delete_site":                                 [Y,    N,    N,     N,     N,     Y,     N,   N,   N,   N,     N],
  "direct insert into site_members (viewer)":    [Y,    Y,    N,     N,     N,     Y,     Y,   N,   N,   N,     N],
  "direct update of sites":                      [Y,    Y,    N,     N,     N,     Y,     Y,   N,   N,   N,     N],
};

// Against another tenant's site every actor above is a stranger, except a platform admin.
const OTHER_SITE: Expected[] = ACTORS.map((a) => (a === "platformAdmin" ? Y : N));

/**
 * Runs one cell in a savepoint that is always rolled back. The outcome is "allowed" when the
 * effect happened, "denied" only when refused in the action's documented way; anything else
 * (another error code, a write that silently did nothing) is reported as itself and fails.
 */
async function cell(client: pg.ClientBase, fx: Fixture, actor: ActorName, action: Action, tenant: Tenant): Promise<string> {
  await client.query("savepoint cell");
  try {
    await becomeUser(client, fx.actors[actor]);
    if (await action.run(client, tenant, fx)) return Y;
    return action.deniedBy === "zero rows" ? N : "no effect, no error";
  } catch (error) {
    const { code, message } = error as { code?: string; message: string };
    return code === action.deniedBy ? N : `error ${code}: ${message}`;
  } finally {
    await client.query("rollback to savepoint cell");
    await becomeRoot(client);
  }
}

describe.each([
  ["own site", (fx: Fixture) => fx.own, (name: string) => OWN_SITE[name]],
  ["other tenant's site", (fx: Fixture) => fx.other, () => OTHER_SITE],
] as const)("role matrix on the %s", (_site, tenantOf, expectedRow) => {
  test.each(Object.keys(ACTIONS))("%s", (name) =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      const observed: Record<string, string> = {};
      for (const actor of ACTORS) observed[actor] = await cell(client, fx, actor, ACTIONS[name], tenantOf(fx));
      const expected = Object.fromEntries(ACTORS.map((actor, i) => [actor, expectedRow(name)[i]]));
      expect(observed).toEqual(expected);
    }));
});

test("every action has a row in the matrix, with one cell per actor", () => {
  // Guards the table itself: a missing or short row would otherwise compare against undefined.
  expect(Object.keys(OWN_SITE).sort()).toEqual(Object.keys(ACTIONS).sort());
  for (const row of Object.values(OWN_SITE)) expect(row).toHaveLength(ACTORS.length);
  expect(OTHER_SITE.filter((e) => e === Y)).toHaveLength(1);
});

/* ------------------------------------------------------ special rules */

describe("a site always keeps an owner", () => {
  // The target is always the site's only owner; "by owner" is therefore the owner leaving.
  const WAYS: Array<[way: string, by: "owner" | "platformAdmin" | "dba", sql: string]> = [
    ["remove_site_member", "owner", "select app_public.remove_site_member($1, $2)"],
    ["remove_site_member", "platformAdmin", "select app_public.remove_site_member($1, $2)"],
    ["add_site_member demoting to admin", "owner",
      "select app_public.add_site_member($1, (select email::text from app_public.users where id = $2), 'admin')"],
    ["add_site_member demoting to viewer", "platformAdmin",
      "select app_public.add_site_member($1, (select email::text from app_public.users where id = $2), 'viewer')"],
    ["a direct update of the role", "owner", "update app_public.site_members set role = 'editor' where site_id = $1 and user_id = $2"],
    ["a direct delete", "owner", "delete from app_public.site_members where site_id = $1 and user_id = $2"],
    ["a direct delete", "dba", "delete from app_public.site_members where site_id = $1 and user_id = $2"],
  ];

  test.each(WAYS)("the last owner cannot be lost through %s by %s (OMOWN)", (_way, by, sql) =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      if (by !== "dba") await becomeUser(client, fx.actors[by]);
      expect(await sqlState(client, () => client.query(sql, [fx.own.siteId, fx.ownerId]))).toBe("OMOWN");
      await becomeRoot(client);
      const { rows } = await client.query("select role from app_public.site_members where site_id = $1 and user_id = $2", [fx.own.siteId, fx.ownerId]);
      expect(rows).toEqual([{ role: "owner" }]);
    }));

  test("with a second owner one may leave, and then the other is the last", () =>
    withRootDb(async (client) => {
      // Shows OMOWN is about the last owner, not a blanket ban on removing owners.
      const fx = await makeFixture(client);
      const secondOwnerId = await createUser(client);
      await addMember(client, fx.own.siteId, secondOwnerId, "owner");
      await becomeUser(client, { userId: secondOwnerId });
      const { rows } = await client.query("select app_public.remove_site_member($1, $2) as removed", [fx.own.siteId, fx.ownerId]);
      expect(rows[0].removed).toBe(true);
      expect(await sqlState(client, () =>
        client.query("select app_public.remove_site_member($1, $2)", [fx.own.siteId, secondOwnerId]))).toBe("OMOWN");
    }));
});

describe("no API key is an owner", () => {
  // Authority is checked first (OM403 for an editor reveals nothing); then the role (OMKRL).
  const CREATORS: Array<[actor: ActorName, code: string]> = [
    ["admin", "OMKRL"], ["adminKey", "OMKRL"], ["owner", "OMKRL"], ["platformAdmin", "OMKRL"], ["editor", "OM403"],
  ];

  test.each(CREATORS)("create_api_key(role owner) by %s is refused with %s", (actor, code) =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await becomeUser(client, fx.actors[actor]);
      expect(await sqlState(client, () =>
        client.query("select app_public.create_api_key($1, 'owner', 'too strong')", [fx.own.siteId]))).toBe(code);
      // The table refuses it too, whoever writes.
      await becomeRoot(client);
      expect(await sqlState(client, () =>
        client.query("insert into app_public.api_keys (site_id, role, key_prefix) values ($1, 'owner', 'om_x')", [fx.own.siteId]))).toBe("23514");
    }));
});

test("no visitor can make anyone a platform admin, not even a platform admin", () =>
  withRootDb(async (client) => {
    // is_platform_admin is granted from the CLI only: the visitor has no update privilege on it.
    const fx = await makeFixture(client);
    for (const actor of ["owner", "platformAdmin"] as const) {
      await becomeUser(client, fx.actors[actor]);
      expect(await sqlState(client, () =>
        client.query("update app_public.users set is_platform_admin = true where id = $1", [fx.actors[actor].userId]))).toBe("42501");
    }
  }));
