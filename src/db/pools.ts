/*
 * Connection pools. The owner pool runs migrations, the worker and the CLI; the authenticator
 * pool serves requests, which switch to the visitor role inside each transaction.
 */
import pg from "pg";
import { Config } from "../config";

export interface Pools {
  owner: pg.Pool;
  auth: pg.Pool;
  end(): Promise<void>;
}

export function makePools(config: Config, { max = 10 }: { max?: number } = {}): Pools {
  const owner = new pg.Pool({ connectionString: config.databaseUrl, max: Math.max(2, Math.floor(max / 2)), application_name: "opsmantik" });
  const auth = new pg.Pool({ connectionString: config.authDatabaseUrl, max, application_name: "opsmantik-api" });
  // A dropped idle connection must not crash the process; the pool replaces it.
  owner.on("error", () => {});
  auth.on("error", () => {});
  return {
    owner,
    auth,
    async end() {
      await Promise.all([owner.end(), auth.end()]);
    },
  };
}
