/*
 * `npx opsmantik setup`: everything a database needs before migrations can run, done as the
 * superuser and only where missing, so running it twice changes nothing.
 *   1. the owner, authenticator and visitor roles;
 *   2. the database, owned by the owner role;
 *   3. pg_partman's package, installed with apt when we are root on Debian;
 *   4. the extensions (migrations/afterReset.sql, the same file graphile-migrate's reset runs).
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import pg from "pg";
import { Config, PROJECT_ROOT } from "../config";

export class SetupError extends Error {}

export interface SetupOptions {
  /** Passwords for the login roles; set on creation (and on re-runs, so .env stays the truth). */
  ownerPassword?: string;
  authenticatorPassword?: string;
  /** Drop and re-create the database first (the test suite's throw-away database). */
  recreate?: boolean;
  log?: (line: string) => void;
}

export interface SetupReport {
  changes: string[];
}

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

async function connectRoot(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "ENOENT" || code === "ECONNREFUSED") {
      throw new SetupError(
        "PostgreSQL is not running on this machine: start it (pg_ctlcluster 15 main start) or set ROOT_DATABASE_URL",
      );
    }
    throw new SetupError(`cannot connect to PostgreSQL as superuser (ROOT_DATABASE_URL): ${(error as Error).message}`);
  }
  const { rows } = await client.query("select rolsuper from pg_roles where rolname = current_user");
  if (!rows[0]?.rolsuper) {
    await client.end();
    throw new SetupError("ROOT_DATABASE_URL must connect as a superuser (setup creates roles and extensions)");
  }
  return client;
}

async function ensureRole(
  client: pg.Client, name: string, attributes: string, password: string | undefined, changes: string[],
): Promise<void> {
  const { rows } = await client.query("select rolcanlogin, rolinherit from pg_roles where rolname = $1", [name]);
  if (rows.length === 0) {
    await client.query(`create role ${quoteIdent(name)} with ${attributes}`);
    changes.push(`created role ${name}`);
  } else {
    await client.query(`alter role ${quoteIdent(name)} with ${attributes}`);
  }
  if (password !== undefined) {
    // Only touch the password when it differs: a re-run must not churn pg_authid.
    const { rows: same } = await client.query(
      "select 1 from pg_authid where rolname = $1 and rolpassword is not null", [name],
    );
    const valid = same.length > 0 && (await passwordWorks(client, name, password));
    if (!valid) {
      await client.query(`alter role ${quoteIdent(name)} with password ${pg.escapeLiteral(password)}`);
      changes.push(`set the password of role ${name}`);
    }
  }
}

/** SCRAM verifiers are salted, so compare by re-deriving from the stored salt. */
async function passwordWorks(client: pg.Client, role: string, password: string): Promise<boolean> {
  const { rows } = await client.query<{ rolpassword: string }>(
    "select rolpassword from pg_authid where rolname = $1", [role],
  );
  const stored = rows[0]?.rolpassword ?? "";
  const match = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$/.exec(stored);
  if (!match) return false;
  const { pbkdf2Sync, createHmac, createHash } = await import("node:crypto");
  const [, iterations, salt, storedKey] = match;
  const salted = pbkdf2Sync(password.normalize("NFKC"), Buffer.from(salt, "base64"), Number(iterations), 32, "sha256");
  const clientKey = createHmac("sha256", salted).update("Client Key").digest();
  return createHash("sha256").update(clientKey).digest("base64") === storedKey;
}

function ensurePartmanPackage(serverMajor: number, log: (line: string) => void): void {
  const pkg = `postgresql-${serverMajor}-partman`;
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  const isDebian = existsSync("/etc/debian_version");
  if (!isRoot || !isDebian) {
    throw new SetupError(`pg_partman is not installed: install ${pkg} (Debian/Ubuntu) or pg_partman 4.7 for PostgreSQL ${serverMajor}`);
  }
  log(`installing ${pkg} with apt-get (pg_partman is missing)…`);
  const run = (args: string[]) =>
    execFileSync("apt-get", args, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
  try {
    run(["install", "-y", "-qq", pkg]);
  } catch {
    try {
      run(["update", "-qq"]);
      run(["install", "-y", "-qq", pkg]);
    } catch {
      throw new SetupError(`pg_partman is not installed and "apt-get install ${pkg}" failed: install it by hand`);
    }
  }
}

/** afterReset.sql with graphile-migrate's placeholders filled in. */
export function afterResetSql(config: Config): string {
  const file = path.join(PROJECT_ROOT, "migrations", "afterReset.sql");
  const values: Record<string, string> = {
    ":DATABASE_NAME": quoteIdent(config.databaseName),
    ":DATABASE_OWNER": quoteIdent(config.roles.owner),
    ":DATABASE_AUTHENTICATOR": quoteIdent(config.roles.authenticator),
    ":DATABASE_VISITOR": quoteIdent(config.roles.visitor),
  };
  return readFileSync(file, "utf8").replace(/:DATABASE_[A-Z]+\b/g, (token) => values[token] ?? token);
}

export async function setup(config: Config, options: SetupOptions = {}): Promise<SetupReport> {
  const log = options.log ?? (() => {});
  const changes: string[] = [];
  const root = await connectRoot(config.rootDatabaseUrl);
  try {
    const { rows: [{ server_version_num }] } = await root.query("show server_version_num");
    const major = Math.floor(Number(server_version_num) / 10000);
    if (major < 15) throw new SetupError(`PostgreSQL ${major} is too old: OpsMantik needs PostgreSQL 15 or newer`);

    await ensureRole(root, config.roles.visitor, "nologin", undefined, changes);
    await ensureRole(root, config.roles.owner, "login nosuperuser nocreatedb nocreaterole", options.ownerPassword, changes);
    await ensureRole(root, config.roles.authenticator, "login noinherit nosuperuser nocreatedb nocreaterole", options.authenticatorPassword, changes);
    const { rows: granted } = await root.query(
      `select 1 from pg_auth_members m join pg_roles r on r.oid = m.roleid join pg_roles u on u.oid = m.member
        where r.rolname = $1 and u.rolname = $2`, [config.roles.visitor, config.roles.authenticator]);
    if (granted.length === 0) {
      await root.query(`grant ${quoteIdent(config.roles.visitor)} to ${quoteIdent(config.roles.authenticator)}`);
      changes.push(`granted ${config.roles.visitor} to ${config.roles.authenticator}`);
    }

    if (options.recreate) {
      await root.query(`drop database if exists ${quoteIdent(config.databaseName)} with (force)`);
    }
    const { rows: databases } = await root.query("select 1 from pg_database where datname = $1", [config.databaseName]);
    if (databases.length === 0) {
      await root.query(`create database ${quoteIdent(config.databaseName)} owner ${quoteIdent(config.roles.owner)} encoding 'UTF8' template template0`);
      if (!options.recreate) changes.push(`created database ${config.databaseName}`);
    }

    const { rows: partman } = await root.query("select 1 from pg_available_extensions where name = 'pg_partman'");
    if (partman.length === 0) {
      ensurePartmanPackage(major, log);
      changes.push("installed pg_partman");
    }
  } finally {
    await root.end();
  }

  const rootUrl = new URL(config.rootDatabaseUrl);
  rootUrl.pathname = `/${config.databaseName}`;
  const target = new pg.Client({ connectionString: rootUrl.toString() });
  await target.connect();
  try {
    const before = await extensionList(target);
    await target.query("set client_min_messages to warning");
    await target.query(afterResetSql(config));
    const after = await extensionList(target);
    if (after !== before && !options.recreate) changes.push(`installed extensions (${after})`);
  } finally {
    await target.end();
  }
  return { changes };
}

async function extensionList(client: pg.Client): Promise<string> {
  const { rows } = await client.query("select string_agg(extname || ' ' || extversion, ', ' order by extname) as list from pg_extension");
  return rows[0].list ?? "";
}
