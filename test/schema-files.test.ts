/*
 * db/schema.sql and db/schema.graphql are committed so that every review shows the real change
 * to the database and the API. These tests regenerate both from the freshly migrated test
 * database and fail when the committed copies are stale (fix: `npx opsmantik schema dump`).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { PROJECT_ROOT, readConfig } from "../src/config";
import { dumpDatabaseSchema, printGraphqlSchema } from "../src/db/schema-files";

const committed = (file: string) => readFileSync(path.join(PROJECT_ROOT, "db", file), "utf8");

describe("committed schema files", () => {
  test("db/schema.sql matches the migrated database", () => {
    const actual = dumpDatabaseSchema(readConfig());
    expect(actual.length).toBeGreaterThan(1000);
    expect(actual).toBe(committed("schema.sql"));
  });

  test("db/schema.graphql matches the GraphQL schema PostGraphile builds", async () => {
    const actual = await printGraphqlSchema(readConfig());
    expect(actual).toContain("type Query");
    expect(actual).toBe(committed("schema.graphql"));
  });
});
