/*
 * Database helpers for tests. withRootDb runs a function in a transaction that is always
 * rolled back, as the superuser; becomeUser switches that transaction to the visitor role with
 * a user's or API key's identity, exactly as a GraphQL request would run.
 */
import pg from "pg";
import { readConfig } from "../../src/config";

let rootPool: pg.Pool | undefined;

export function rootDbUrl(): string {
  const url = new URL(readConfig().rootDatabaseUrl);
  url.pathname = `/${readConfig().databaseName}`;
  return url.toString();
}

export function getRootPool(): pg.Pool {
  // Idle connections never hold the process: an afterAll that runs after this module's own
  // (which closes the pool) re-opens it, and nothing would close it again.
  rootPool ??= new pg.Pool({ connectionString: rootDbUrl(), max: 8, allowExitOnIdle: true });
  return rootPool;
}

export async function closeRootPool(): Promise<void> {
  await rootPool?.end();
  rootPool = undefined;
}

afterAll(closeRootPool);

export async function withRootDb<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await getRootPool().connect();
  await client.query("begin");
  try {
    return await fn(client);
  } finally {
    await client.query("rollback");
    client.release();
  }
}

export interface Identity {
  userId?: string;
  apiKeyId?: string;
}

/** Inside a withRootDb transaction: act as the visitor role with this identity from now on. */
export async function becomeUser(client: pg.ClientBase, identity: Identity): Promise<void> {
  await client.query(
    "select set_config('role', 'opsmantik_visitor', true), set_config('app.user_id', $1, true), set_config('app.api_key_id', $2, true)",
    [identity.userId ?? "", identity.apiKeyId ?? ""],
  );
}

/** Back to the superuser within the same transaction. */
export async function becomeRoot(client: pg.ClientBase): Promise<void> {
  await client.query("reset role; select set_config('app.user_id', '', true), set_config('app.api_key_id', '', true)");
}

/** Runs fn in a savepoint and returns the SQLSTATE it raised (or null), leaving the transaction usable. */
export async function sqlState(client: pg.ClientBase, fn: () => Promise<unknown>): Promise<string | null> {
  await client.query("savepoint probe");
  try {
    await fn();
    await client.query("release savepoint probe");
    return null;
  } catch (error) {
    await client.query("rollback to savepoint probe");
    return (error as { code?: string }).code ?? "unknown";
  }
}

/** Waits until `count` sessions wait for an advisory lock: a test holding one knows its request has got that far. */
export async function waitForLockWaiters(count: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    // This database's only: another suite may run beside this one on the same server.
    const { rows } = await getRootPool().query(
      `select count(*)::int as n from pg_locks
        where locktype = 'advisory' and not granted and database = (select oid from pg_database where datname = current_database())`);
    if (rows[0].n >= count) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`fewer than ${count} sessions ever waited for an advisory lock`);
}

let counter = 0;
export const unique = (prefix: string) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${++counter}`;

export async function createUser(client: Pick<pg.ClientBase, "query">, email = `${unique("user")}@example.com`, platformAdmin = false): Promise<string> {
  const { rows } = await client.query(
    "insert into app_public.users (email, is_platform_admin) values ($1, $2) returning id", [email, platformAdmin],
  );
  return rows[0].id;
}

export async function createSite(client: pg.ClientBase, ownerId: string, domain = "shop.example"): Promise<{ id: string; publicKey: string }> {
  const { rows } = await client.query("select id, public_key from app_private.create_site($1, $2, $3)", [ownerId, unique("Site"), domain]);
  return { id: rows[0].id, publicKey: rows[0].public_key };
}

export async function addMember(client: pg.ClientBase, siteId: string, userId: string, role: string): Promise<void> {
  await client.query("insert into app_public.site_members (site_id, user_id, role) values ($1, $2, $3)", [siteId, userId, role]);
}

export async function createApiKey(client: pg.ClientBase, siteId: string, role: string): Promise<{ id: string; key: string }> {
  const { rows } = await client.query("select api_key_id, key from app_private.issue_api_key($1, $2, 'test', null)", [siteId, role]);
  return { id: rows[0].api_key_id, key: rows[0].key };
}
