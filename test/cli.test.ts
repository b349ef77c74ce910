/*
 * The admin CLI as scripts and operators use it: a real `node src/cli/opsmantik.cjs` process
 * against the test database. What is checked is the contract of SPEC §4: exit codes (0 done,
 * 1 refused, 2 usage), exactly one JSON object on stdout with --json (errors too), one clear
 * line on stderr, and rows in the database exactly as asked, or none at all when refused.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { makeTokenVerifier } from "../src/auth/jwt";
import { ENV_FILE, readConfig } from "../src/config";
import { getRootPool, unique } from "./helpers/db";
import { CliResult, runCli } from "./helpers/cli";

/** --json promises exactly one JSON object on stdout. */
function onlyJson(result: CliResult): Record<string, any> {
  const lines = result.stdout.trim().split("\n");
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]);
}

/** A refusal the user can act on: one line on stderr, never a stack trace. */
function expectOneLineError(result: CliResult, pattern: RegExp): void {
  expect(result.stderr.trim().split("\n")).toEqual([expect.stringMatching(pattern)]);
}

const db = () => getRootPool();
const email = () => `${unique("cli")}@example.com`.toLowerCase();

async function createUser(): Promise<{ id: string; email: string }> {
  const address = email();
  const result = await runCli(["user", "create", "--email", address, "--json"]);
  expect(result.code).toBe(0);
  return { id: onlyJson(result).id, email: address };
}

async function createSite(ownerEmail: string, extra: string[] = []): Promise<Record<string, string>> {
  const result = await runCli(["site", "create", "--name", unique("Shop"), "--domain", "shop.example", "--owner", ownerEmail, ...extra, "--json"]);
  expect(result.code).toBe(0);
  return onlyJson(result);
}

async function siteCountNamed(name: string): Promise<number> {
  return (await db().query("select count(*)::int as n from app_public.sites where name = $1", [name])).rows[0].n;
}

function envFileState(): { mtimeMs: number; sha256: string } | null {
  if (!existsSync(ENV_FILE)) return null;
  return { mtimeMs: statSync(ENV_FILE).mtimeMs, sha256: createHash("sha256").update(readFileSync(ENV_FILE)).digest("hex") };
}
const envFileBefore = envFileState();

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/* SPEC §4's commands, and which of them this build implements. */
const IMPLEMENTED = ["setup", "migrate", "user create", "site create", "token", "api-key create", "api-key revoke"];
const SPEC_COMMANDS = [...IMPLEMENTED, "call-secret rotate", "destination create", "export-credential create", "erasure request", "vault rotate"];

describe("help and usage", () => {
  let overview: CliResult;
  beforeAll(async () => {
    overview = await runCli(["--help"]);
  });

  test("--help exits 0 and lists every implemented command of SPEC §4", () => {
    expect(overview.code).toBe(0);
    const listed = overview.stdout.split("\n").map((line) => line.trim());
    for (const command of IMPLEMENTED) expect(listed.some((line) => line.startsWith(`${command} `))).toBe(true);
  });

  test.each(SPEC_COMMANDS)("`%s --help` works exactly when --help lists the command", async (command) => {
    // Keeps the overview honest as commands are added: a command is either listed and
    // documented, or unknown (exit 2); never one without the other.
    const result = await runCli([...command.split(" "), "--help"]);
    const listed = overview.stdout.split("\n").some((line) => line.trim().startsWith(`${command} `));
    if (IMPLEMENTED.includes(command)) expect(listed).toBe(true);
    expect(result.code).toBe(listed ? 0 : 2);
    if (listed) expect(result.stdout).toMatch(new RegExp(`^usage: npx opsmantik ${command}\\b`, "m"));
  });

  test("an unknown command exits 2 and points at --help", async () => {
    const result = await runCli(["frobnicate", "--json"]);
    expect(result.code).toBe(2);
    expect(onlyJson(result)).toMatchObject({ error: "unknown_command" });
    expect(result.stderr).toMatch(/unknown command "frobnicate".*--help/);
  });

  test("a missing required option exits 2 and names it", async () => {
    const result = await runCli(["site", "create", "--name", "N", "--owner", "nobody@example.com", "--json"]);
    expect(result.code).toBe(2);
    expect(onlyJson(result)).toMatchObject({ error: "invalid_usage", message: expect.stringContaining("--domain is required") });
    expect(result.stderr).toMatch(/--domain is required/);
  });

  test("an unknown option exits 2 and names it", async () => {
    const result = await runCli(["user", "create", "--email", email(), "--colour", "blue"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--colour/);
  });
});

describe("user create", () => {
  test("--json prints {id} and the row exists with that email", async () => {
    const address = email();
    const result = await runCli(["user", "create", "--email", address, "--json"]);
    expect(result.code).toBe(0);
    const json = onlyJson(result);
    expect(Object.keys(json)).toEqual(["id"]);
    expect(json.id).toMatch(UUID);
    const { rows } = await db().query("select email::text, is_platform_admin from app_public.users where id = $1", [json.id]);
    expect(rows).toEqual([{ email: address, is_platform_admin: false }]);
  });

  test("--platform-admin is stored", async () => {
    const result = await runCli(["user", "create", "--email", email(), "--platform-admin", "--json"]);
    expect(result.code).toBe(0);
    const { rows } = await db().query("select is_platform_admin from app_public.users where id = $1", [onlyJson(result).id]);
    expect(rows).toEqual([{ is_platform_admin: true }]);
  });

  test("a duplicate email (in any case) exits 1 with already_exists and one line on stderr", async () => {
    const { email: address } = await createUser();
    const result = await runCli(["user", "create", "--email", address.toUpperCase(), "--json"]);
    expect(result.code).toBe(1);
    expect(onlyJson(result)).toEqual({ error: "already_exists", message: expect.stringMatching(/already exists/) });
    expectOneLineError(result, /already exists/);
    const { rows } = await db().query("select count(*)::int as n from app_public.users where email = $1", [address]);
    expect(rows[0].n).toBe(1);
  });

  test("a malformed email exits 1 with invalid_input", async () => {
    const result = await runCli(["user", "create", "--email", "not-an-email", "--json"]);
    expect(result.code).toBe(1);
    expect(onlyJson(result)).toMatchObject({ error: "invalid_input" });
    expectOneLineError(result, /email address is not valid/);
  });
});

describe("site create", () => {
  let owner: { id: string; email: string };
  beforeAll(async () => {
    owner = await createUser();
  });

  test("--json prints {id, public_key, call_event_secret}, matching the stored site, with the owner as owner", async () => {
    const json = await createSite(owner.email);
    expect(Object.keys(json).sort()).toEqual(["call_event_secret", "id", "public_key"]);
    expect(json.id).toMatch(UUID);
    expect(json.public_key).toMatch(/^pk_[0-9a-f]{32}$/);
    const { rows } = await db().query(
      `select s.public_key, s.domain, c.current_secret, m.user_id, m.role::text
         from app_public.sites s join app_private.call_event_secrets c on c.site_id = s.id
         join app_public.site_members m on m.site_id = s.id where s.id = $1`, [json.id]);
    expect(rows).toEqual([{ public_key: json.public_key, domain: "shop.example", current_secret: json.call_event_secret, user_id: owner.id, role: "owner" }]);
  });

  test("every option is stored as given", async () => {
    const name = unique("Istanbul shop");
    const result = await runCli([
      "site", "create", "--name", name, "--domain", "shop.example", "--owner", owner.email,
      "--consent-mode", "implied", "--monthly-event-quota", "100", "--rate-limit-per-minute", "0",
      "--allowed-origin", "https://a.example", "--allowed-origin", "https://b.example",
      "--timezone", "Europe/Istanbul", "--currency", "TRY", "--json",
    ]);
    // Looked up by its unique name, so the stored settings are checked even if the output is wrong.
    const { rows } = await db().query(
      `select id, name, domain, consent_mode, monthly_event_quota::int as quota, rate_limit_per_minute, allowed_origins, timezone, currency
         from app_public.sites where name = $1`, [name]);
    // rate limit 0 means "off" and must not fall back to the default 600.
    expect(rows).toEqual([{
      id: expect.any(String), name, domain: "shop.example", consent_mode: "implied", quota: 100, rate_limit_per_minute: 0,
      allowed_origins: ["https://a.example", "https://b.example"], timezone: "Europe/Istanbul", currency: "TRY",
    }]);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    expect(onlyJson(result).id).toBe(rows[0].id);
  });

  test.each([
    ["an invalid domain", ["--domain", "https://shop.example/"], 1, /domain must be a host name/],
    ["an unknown time zone", ["--domain", "shop.example", "--timezone", "Mars/Olympus_Mons"], 1, /time zone/],
    ["a bad consent mode", ["--domain", "shop.example", "--consent-mode", "maybe"], 2, /--consent-mode must be required or implied/],
    ["a negative quota", ["--domain", "shop.example", "--monthly-event-quota", "-5"], 2, /monthly-event-quota/],
  ])("%s is refused with a clear message and writes nothing", async (_what, options, exitCode, message) => {
    const name = unique("Refused");
    const result = await runCli(["site", "create", "--name", name, "--owner", owner.email, ...(options as string[]), "--json"]);
    expect(result.code).toBe(exitCode);
    expect(onlyJson(result).error).toBe(exitCode === 2 ? "invalid_usage" : "invalid_input");
    expect(result.stderr).toMatch(message as RegExp);
    expect(result.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(await siteCountNamed(name)).toBe(0);
  });

  test("an unknown owner email is refused with a hint to create the user, and writes nothing", async () => {
    const name = unique("Orphan");
    const nobody = email();
    const result = await runCli(["site", "create", "--name", name, "--domain", "shop.example", "--owner", nobody, "--json"]);
    expect(result.code).toBe(1);
    expect(onlyJson(result)).toMatchObject({ error: "user_not_found" });
    expectOneLineError(result, new RegExp(`no user has the email ${nobody}.*user create`));
    expect(await siteCountNamed(name)).toBe(0);
  });
});

describe("token", () => {
  let user: { id: string; email: string };
  const verify = makeTokenVerifier(readConfig());
  const claims = (jwt: string) => JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString("utf8"));

  beforeAll(async () => {
    user = await createUser();
  });

  test("--json prints {token}, which the server's verifier accepts as that user, valid for 1 hour by default", async () => {
    const result = await runCli(["token", "--email", user.email, "--json"]);
    expect(result.code).toBe(0);
    const json = onlyJson(result);
    expect(Object.keys(json)).toEqual(["token"]);
    await expect(verify(json.token)).resolves.toEqual({ userId: user.id });
    const { iat, exp } = claims(json.token);
    expect(exp - iat).toBe(3600);
  });

  test("--ttl 2h is honoured", async () => {
    const result = await runCli(["token", "--email", user.email, "--ttl", "2h", "--json"]);
    expect(result.code).toBe(0);
    const jwt = onlyJson(result).token;
    await expect(verify(jwt)).resolves.toEqual({ userId: user.id });
    const { iat, exp } = claims(jwt);
    expect(exp - iat).toBe(7200);
    expect(Math.abs(iat - Date.now() / 1000)).toBeLessThan(60);
  });

  test("a bad --ttl is a usage error (exit 2) naming the option", async () => {
    const result = await runCli(["token", "--email", user.email, "--ttl", "two hours", "--json"]);
    expect(result.code).toBe(2);
    expect(onlyJson(result)).toMatchObject({ error: "invalid_usage", message: expect.stringContaining("--ttl") });
  });

  test("an unknown email exits 1 with user_not_found and prints no token", async () => {
    const result = await runCli(["token", "--email", email(), "--json"]);
    expect(result.code).toBe(1);
    expect(onlyJson(result)).toEqual({ error: "user_not_found", message: expect.any(String) });
  });
});

describe("api-key create and revoke", () => {
  let siteId: string;
  beforeAll(async () => {
    // The site is made in SQL, not with `site create`, so a fault there cannot hide these tests.
    const owner = await createUser();
    const { rows } = await db().query("select id from app_private.create_site($1, $2, 'shop.example')", [owner.id, unique("Keys")]);
    siteId = rows[0].id;
  });

  async function createKey(role = "editor"): Promise<{ id: string; key: string }> {
    const result = await runCli(["api-key", "create", "--site", siteId, "--role", role, "--json"]);
    expect(result.code).toBe(0);
    return onlyJson(result) as { id: string; key: string };
  }

  test("--json prints {id, key} once; the key is stored only as its SHA-256", async () => {
    const created = await createKey();
    expect(Object.keys(created).sort()).toEqual(["id", "key"]);
    expect(created.id).toMatch(UUID);
    expect(created.key).toMatch(/^om_[A-Za-z0-9_-]{20,}$/);

    const { rows: [row] } = await db().query("select role::text, revoked_at from app_public.api_keys where id = $1", [created.id]);
    expect(row).toEqual({ role: "editor", revoked_at: null });
    const { rows: hashes } = await db().query("select key_hash from app_private.api_key_hashes where api_key_id = $1", [created.id]);
    expect(hashes).toEqual([{ key_hash: createHash("sha256").update(created.key).digest() }]);

    // The key itself is in no row of any table: every table outside the system schemas, read as text.
    const { rows: tables } = await db().query<{ name: string }>(
      `select c.oid::regclass::text as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%'`);
    expect(tables.map((t) => t.name)).toEqual(expect.arrayContaining(["app_public.api_keys", "app_private.api_key_hashes"]));
    const holding: string[] = [];
    for (const { name } of tables) {
      const { rows } = await db().query(`select count(*)::int as n from ${name} t where strpos(t::text, $1) > 0`, [created.key]);
      if (rows[0].n > 0) holding.push(name);
    }
    expect(holding).toEqual([]);
  });

  test("role owner is refused (exit 2) and no key is written", async () => {
    const count = async () => (await db().query("select count(*)::int as n from app_public.api_keys where site_id = $1", [siteId])).rows[0].n;
    const before = await count();
    const result = await runCli(["api-key", "create", "--site", siteId, "--role", "owner", "--json"]);
    expect(result.code).toBe(2);
    expect(onlyJson(result)).toMatchObject({ error: "invalid_usage", message: expect.stringMatching(/viewer, editor or admin/) });
    expect(await count()).toBe(before);
  });

  test("an unknown site is refused with site_not_found", async () => {
    const result = await runCli(["api-key", "create", "--site", "00000000-0000-4000-8000-000000000000", "--role", "viewer", "--json"]);
    expect(result.code).toBe(1);
    expect(onlyJson(result)).toMatchObject({ error: "site_not_found" });
  });

  test("revoke --json sets revoked_at, and the key stops authenticating", async () => {
    const created = await createKey("viewer");
    const authenticates = async () =>
      (await db().query("select api_key_id from app_private.authenticate_api_key($1)", [created.key])).rows.map((r) => r.api_key_id);
    expect(await authenticates()).toEqual([created.id]); // control: the key worked before

    const result = await runCli(["api-key", "revoke", "--id", created.id, "--json"]);
    expect(result.code).toBe(0);
    const json = onlyJson(result);
    expect(json.id).toBe(created.id);
    const { rows: [row] } = await db().query("select revoked_at from app_public.api_keys where id = $1", [created.id]);
    expect(row.revoked_at).toBeInstanceOf(Date);
    expect(new Date(json.revoked_at).getTime()).toBe(row.revoked_at.getTime());
    expect(await authenticates()).toEqual([]);
  });

  test("revoking an unknown id exits 1 with api_key_not_found", async () => {
    const unknownId = "00000000-0000-4000-8000-000000000001";
    const result = await runCli(["api-key", "revoke", "--id", unknownId, "--json"]);
    expect(result.code).toBe(1);
    expect(onlyJson(result)).toMatchObject({ error: "api_key_not_found" });
    expectOneLineError(result, new RegExp(unknownId));
  });

  test("revoke with an id that is not a UUID is a usage error naming --id", async () => {
    const result = await runCli(["api-key", "revoke", "--id", "42", "--json"]);
    expect(result.code).toBe(2);
    expect(onlyJson(result).message).toMatch(/--id must be a UUID/);
  });
});

test("the developer's .env was neither created nor changed", () => {
  expect(envFileState()).toEqual(envFileBefore);
});
