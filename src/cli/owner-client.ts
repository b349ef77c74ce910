/* One owner connection for the duration of a CLI command or a test helper. */
import pg from "pg";
import { Config } from "../config";
import { publicDatabaseError } from "../db/errors";
import { CommandError } from "./command";

export async function withOwnerClient<T>(config: Config, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: config.databaseUrl, application_name: "opsmantik-cli" });
  try {
    await client.connect();
  } catch (error) {
    throw new CommandError("database_unavailable", `cannot connect to the database (${(error as Error).message}): run \`npx opsmantik setup\``);
  }
  try {
    return await fn(client);
  } catch (error) {
    const known = publicDatabaseError(error);
    if (known) throw new CommandError(known.code, known.message);
    if ((error as { code?: string }).code === "42P01" || (error as { code?: string }).code === "3F000") {
      throw new CommandError("not_migrated", "the database has not been migrated: run `npx opsmantik migrate`");
    }
    throw error;
  } finally {
    await client.end();
  }
}
