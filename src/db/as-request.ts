/*
 * Runs work in one transaction as the request's identity: the visitor role with the caller's
 * user or API key in transaction-local settings, exactly as GraphQL does, so RLS and the
 * functions' role checks apply to the HTTP API too. Rolls back on any error.
 */
import type pg from "pg";
import type { Config } from "../config";
import { pgSettingsFor, RequestAuth } from "../http/auth-context";

/** Inside an open transaction: the rest of it runs as the request's identity. */
export async function actAs(client: pg.ClientBase, config: Config, auth: RequestAuth | undefined): Promise<void> {
  const settings = pgSettingsFor(config, auth);
  await client.query("select set_config('role', $1, true), set_config('app.user_id', $2, true), set_config('app.api_key_id', $3, true)",
    [settings.role, settings["app.user_id"], settings["app.api_key_id"]]);
}

export async function asRequest<T>(pool: pg.Pool, config: Config, auth: RequestAuth | undefined,
  work: (client: pg.PoolClient) => Promise<T>, { readOnly = false } = {}): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query(readOnly ? "begin read only" : "begin");
    await actAs(client, config, auth);
    const result = await work(client);
    await client.query("commit");
    return result;
  } catch (error) {
    await client.query("rollback").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}
