/*
 * Connection pools. The owner pool runs migrations, the worker and the CLI; the authenticator
 * pool serves requests, which switch to the visitor role inside each transaction.
 */
import pg from "pg";
import { Config } from "../config";
import { logger } from "../logger";

export interface Pools {
  owner: pg.Pool;
  auth: pg.Pool;
  end(): Promise<void>;
}

export function makePools(config: Config, { max = 10 }: { max?: number } = {}): Pools {
  const owner = new pg.Pool({ connectionString: config.databaseUrl, max: Math.max(2, Math.floor(max / 2)), application_name: "opsmantik" });
  const auth = new pg.Pool({ connectionString: config.authDatabaseUrl, max, application_name: "opsmantik-api" });
  // A connection dropped by the server (restart, idle timeout) must not crash the process: the
  // pool discards the client and opens another. Checked-out clients get a handler too.
  for (const pool of [owner, auth]) {
    pool.on("error", (error) => logger.warn({ err: error.message }, "idle database connection lost"));
    pool.on("connect", (client) => client.on("error", (error) => logger.warn({ err: error.message }, "database connection lost")));
  }
  return {
    owner,
    auth,
    async end() {
      await Promise.all([owner.end(), auth.end()]);
    },
  };
}
