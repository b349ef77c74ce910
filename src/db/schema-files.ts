/* The committed schema descriptions, generated the same way by the CLI and by the staleness test. */
import { execFileSync } from "node:child_process";
import { postgraphile } from "postgraphile";
import { lexicographicSortSchema, printSchema } from "postgraphile/graphql";
import type { Config } from "../config";
import { makePools } from "./pools";
import { makePreset } from "../graphql/preset";

/** pg_dump of our three schemas, without partitions and the lines that vary between machines. */
export function dumpDatabaseSchema(config: Config): string {
  const output = execFileSync("pg_dump", [
    "--schema-only", "--no-owner", "--no-tablespaces",
    "--schema=app_public", "--schema=app_hidden", "--schema=app_private",
    // Monthly partitions are named after dates: they would make the dump change every month.
    "--exclude-table=app_public.*_p[0-9][0-9][0-9][0-9]_[0-9][0-9]", "--exclude-table=app_public.*_default",
    "--dbname", config.databaseUrl,
  ], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  return output
    .split("\n")
    .filter((line) => !/^-- Dumped (from|by) /.test(line) && !/^\\(un)?restrict /.test(line))
    .join("\n")
    .replace(/\n{3,}/g, "\n\n");
}

export async function printGraphqlSchema(config: Config): Promise<string> {
  const pools = makePools(config, { max: 2 });
  const pgl = postgraphile(makePreset(config, pools));
  try {
    const schema = await pgl.getSchema();
    return printSchema(lexicographicSortSchema(schema)) + "\n";
  } finally {
    await pgl.release();
    await pools.end();
  }
}
