/*
 * `npx opsmantik setup` and the configuration it reads. Setup runs as the superuser against a
 * real server, so these tests create their own database (opsmantik_t_setup, dropped at the end)
 * and check the catalog itself: "idempotent" means a second run changes nothing PostgreSQL
 * records, not merely that it reports nothing.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import pg from "pg";
import { Config, ConfigError, ENV_FILE, readConfig } from "../src/config";
import { setup, SetupError } from "../src/setup/setup";
import { getRootPool } from "./helpers/db";
import { testEnv } from "./helpers/env";
import { runCli } from "./helpers/cli";

const SETUP_DATABASE = "opsmantik_t_setup";
const CLI_SETUP_DATABASE = "opsmantik_t_setup_cli";
const NO_SUPERUSER_DATABASE = "opsmantik_t_setup_nosuper";
const SOCKET = "host=%2Fvar%2Frun%2Fpostgresql";
const OUR_ROLES = ["opsmantik_owner", "opsmantik_authenticator", "opsmantik_visitor"];

/** Settings as the test helpers define them, pointed at another database. */
function configFor(database: string, overrides: Record<string, string> = {}): Config {
  return readConfig({ ...process.env, ...testEnv(database), ...overrides });
}

/** A superuser connection to one database of the local server. */
async function rootClient(database: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: `postgres://postgres@localhost/${database}?${SOCKET}` });
  await client.connect();
  return client;
}

async function dropDatabase(database: string): Promise<void> {
  const client = await rootClient("postgres");
  try {
    await client.query(`drop database if exists ${database} with (force)`);
  } finally {
    await client.end();
  }
}

async function databaseExists(database: string): Promise<boolean> {
  const client = await rootClient("postgres");
  try {
    return (await client.query("select 1 from pg_database where datname = $1", [database])).rowCount === 1;
  } finally {
    await client.end();
  }
}

/*
 * Everything setup is responsible for, as PostgreSQL records it: the three roles (attributes,
 * a digest of the password verifier so a re-set password shows, memberships both ways), the
 * database with its owner and ACL, and inside it the extensions and the schema ACLs that
 * afterReset.sql grants.
 */
async function catalogSnapshot(database: string): Promise<unknown> {
  const server = await rootClient("postgres");
  const inside = await rootClient(database);
  try {
    const { rows: roles } = await server.query(
      `select r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication,
              r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil, (select c.rolconfig from pg_roles c where c.oid = r.oid) as rolconfig, md5(coalesce(r.rolpassword, '')) as password_digest,
              array(select g.rolname || case when m.admin_option then ' (admin)' else '' end
                      from pg_auth_members m join pg_roles g on g.oid = m.roleid where m.member = r.oid order by 1) as member_of,
              array(select u.rolname || case when m.admin_option then ' (admin)' else '' end
                      from pg_auth_members m join pg_roles u on u.oid = m.member where m.roleid = r.oid order by 1) as members
         from pg_authid r where r.rolname = any($1) order by r.rolname`, [OUR_ROLES]);
    const { rows: [databaseRow] } = await server.query(
      `select datname, pg_get_userbyid(datdba) as owner, pg_encoding_to_char(encoding) as encoding,
              datallowconn, datconnlimit, datacl::text[] as acl
         from pg_database where datname = $1`, [database]);
    const { rows: extensions } = await inside.query(
      "select extname, extversion, extnamespace::regnamespace::text as schema from pg_extension order by extname");
    const { rows: schemas } = await inside.query(
      `select nspname, pg_get_userbyid(nspowner) as owner, nspacl::text[] as acl
         from pg_namespace where nspname in ('public', 'partman') order by nspname`);
    return { roles, database: databaseRow, extensions, schemas };
  } finally {
    await Promise.all([server.end(), inside.end()]);
  }
}


/** The developer's .env as it was: tests must never create or rewrite it. */
function envFileState(): { mtimeMs: number; sha256: string } | null {
  if (!existsSync(ENV_FILE)) return null;
  return { mtimeMs: statSync(ENV_FILE).mtimeMs, sha256: createHash("sha256").update(readFileSync(ENV_FILE)).digest("hex") };
}
const envFileBefore = envFileState();

beforeAll(async () => {
  // A previous run that crashed may have left them behind; setup must find them missing.
  for (const database of [SETUP_DATABASE, CLI_SETUP_DATABASE, NO_SUPERUSER_DATABASE]) await dropDatabase(database);
});

afterAll(async () => {
  for (const database of [SETUP_DATABASE, CLI_SETUP_DATABASE, NO_SUPERUSER_DATABASE]) await dropDatabase(database);
});

describe("setup()", () => {
  test("creates a missing database and its extensions, then a second run changes nothing", async () => {
    const config = configFor(SETUP_DATABASE);
    const first = await setup(config);
    expect(first.changes).toContain(`created database ${SETUP_DATABASE}`);
    expect(first.changes.some((c) => /^installed extensions \(.*pg_partman/.test(c))).toBe(true);

    const before = await catalogSnapshot(SETUP_DATABASE);
    const second = await setup(config);
    expect(second.changes).toEqual([]);
    // Reporting nothing is not enough: the catalog must be exactly as the first run left it.
    expect(await catalogSnapshot(SETUP_DATABASE)).toEqual(before);
  });

  test("the database belongs to the owner role; only the authenticator may connect (with temp tables)", async () => {
    // Guards the snapshot above against comparing two equally wrong states.
    const snapshot = (await catalogSnapshot(SETUP_DATABASE)) as {
      database: { owner: string; acl: string[] };
      roles: Array<{ rolname: string; rolcanlogin: boolean; rolinherit: boolean; rolsuper: boolean; member_of: string[] }>;
    };
    expect(snapshot.database.owner).toBe("opsmantik_owner");
    expect(snapshot.database.acl.filter((entry) => entry.startsWith("opsmantik_authenticator="))).toEqual([
      expect.stringMatching(/^opsmantik_authenticator=Tc\//),
    ]);
    expect(snapshot.database.acl.some((entry) => entry.startsWith("="))).toBe(false); // PUBLIC revoked
    const byName = Object.fromEntries(snapshot.roles.map((r) => [r.rolname, r]));
    expect(byName.opsmantik_authenticator).toMatchObject({ rolcanlogin: true, rolinherit: false, rolsuper: false, member_of: ["opsmantik_visitor"] });
    expect(byName.opsmantik_visitor).toMatchObject({ rolcanlogin: false, rolsuper: false });
    expect(byName.opsmantik_owner).toMatchObject({ rolcanlogin: true, rolsuper: false });
  });

  test("the test database has pg_partman in its own schema, pgcrypto and citext", async () => {
    const { rows } = await getRootPool().query(
      "select extname, extnamespace::regnamespace::text as schema from pg_extension where extname in ('pgcrypto', 'citext', 'pg_partman') order by extname");
    expect(rows).toEqual([
      { extname: "citext", schema: "public" },
      { extname: "pg_partman", schema: "partman" },
      { extname: "pgcrypto", schema: "public" },
    ]);
  });

  test("PostgreSQL not listening: one line saying it is not running", async () => {
    const config = configFor(SETUP_DATABASE, { ROOT_DATABASE_URL: "postgres://postgres@127.0.0.1:1/postgres" });
    const error = await setup(config).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(SetupError);
    expect((error as Error).message).toMatch(/PostgreSQL is not running/);
    expect((error as Error).message).not.toMatch(/\n/);
  });

  test("a ROOT_DATABASE_URL that is not a superuser is refused in one line, before anything is created", async () => {
    const config = configFor(NO_SUPERUSER_DATABASE, { ROOT_DATABASE_URL: `postgres://opsmantik_owner@localhost/postgres?${SOCKET}` });
    const error = await setup(config).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(SetupError);
    expect((error as Error).message).toMatch(/ROOT_DATABASE_URL must connect as a superuser/);
    expect((error as Error).message).not.toMatch(/\n/);
    expect(await databaseExists(NO_SUPERUSER_DATABASE)).toBe(false);
  });
});

describe("readConfig()", () => {
  const valid = { ...testEnv() };
  const rejection = (overrides: Record<string, string>): unknown => {
    try {
      readConfig({ ...valid, ...overrides });
      return undefined;
    } catch (error) {
      return error;
    }
  };

  test("accepts the test settings, http JWKS on loopback and a list of origins", () => {
    // The control for the rejections below: without it, a readConfig that always threw would pass them.
    expect(rejection({})).toBeUndefined();
    const config = readConfig({ ...valid, JWKS_URL: "http://127.0.0.1:4000/jwks.json", ALLOWED_ORIGINS: "https://a.example, http://localhost:5173/" });
    expect(config.jwt.jwksUrl?.toString()).toBe("http://127.0.0.1:4000/jwks.json");
    expect(config.allowedOrigins).toEqual(["https://a.example", "http://localhost:5173"]);
    expect(config.vaultKeys).toHaveLength(1);
  });

  test.each([
    ["PORT", { PORT: "abc" }],
    ["PORT", { PORT: "70000" }],
    ["DATABASE_URL", { DATABASE_URL: "mysql://x" }],
    ["DATABASE_URL", { DATABASE_URL: "not a url" }],
    ["JWT_SECRET", { JWT_SECRET: "too-short" }],
    ["VAULT_KEYS", { VAULT_KEYS: "no-colon-here" }],
    ["VAULT_KEYS", { VAULT_KEYS: `k1:${Buffer.alloc(16, 1).toString("base64")}` }], // 16 bytes, not 32
    ["ALLOWED_ORIGINS", { ALLOWED_ORIGINS: "https://a.example/path" }],
    ["JWKS_URL", { JWKS_URL: "http://idp.example/.well-known/jwks.json" }],
  ])("rejects a malformed %s with one line naming it (%j)", (name, overrides) => {
    const error = rejection(overrides);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toContain(name);
    expect((error as Error).message).not.toMatch(/\n/);
  });
});

describe("opsmantik setup (CLI)", () => {
  test("--json on a new database lists what it did, and a second run prints no changes", async () => {
    const env = testEnv(CLI_SETUP_DATABASE);
    const first = await runCli(["setup", "--json"], env);
    expect(first).toMatchObject({ code: 0 });
    expect(first.stdout.trim().split("\n")).toHaveLength(1);
    const firstJson = JSON.parse(first.stdout);
    expect(Object.keys(firstJson)).toEqual(["changes"]);
    expect(firstJson.changes).toContain(`created database ${CLI_SETUP_DATABASE}`);

    const second = await runCli(["setup", "--json"], env);
    expect(second).toMatchObject({ code: 0 });
    expect(JSON.parse(second.stdout)).toEqual({ changes: [] });
  });

  test("--json against the (already set up) test database: exit 0, then {changes: []}", async () => {
    // The first run may still align role passwords with .env; the second must find nothing to do.
    const first = await runCli(["setup", "--json"], {});
    expect(first).toMatchObject({ code: 0 });
    expect(Array.isArray(JSON.parse(first.stdout).changes)).toBe(true);
    const second = await runCli(["setup", "--json"], {});
    expect(second).toMatchObject({ code: 0 });
    expect(JSON.parse(second.stdout)).toEqual({ changes: [] });
  });

  test("a server that is not running: exit 1, JSON error and one line on stderr", async () => {
    const result = await runCli(["setup", "--json"], { ROOT_DATABASE_URL: "postgres://postgres@127.0.0.1:1/postgres" });
    expect(result.code).toBe(1);
    expect(JSON.parse(result.stdout)).toMatchObject({ error: "configuration", message: expect.stringMatching(/PostgreSQL is not running/) });
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });

  test("a malformed setting stops the CLI with one line naming it", async () => {
    const result = await runCli(["setup"], { PORT: "abc" });
    expect(result.code).toBe(1);
    expect(result.stderr.trim().split("\n")).toEqual([expect.stringContaining("PORT")]);
  });
});

test("the developer's .env was neither created nor changed", () => {
  expect(envFileState()).toEqual(envFileBefore);
});
