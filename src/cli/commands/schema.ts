/*
 * `schema dump`: regenerates the two committed descriptions of what we expose, so that every
 * review shows the real change: db/schema.sql (pg_dump of our schemas) and db/schema.graphql
 * (the GraphQL schema, sorted). A test fails when either is stale.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { readConfig, PROJECT_ROOT } from "../../config";
import { dumpDatabaseSchema, printGraphqlSchema } from "../../db/schema-files";
import { Command } from "../command";

export const schemaDump: Command = {
  words: ["schema", "dump"],
  summary: "Rewrite db/schema.sql and db/schema.graphql from the migrated database.",
  usage: "npx opsmantik schema dump [--json]",
  options: {},
  async run() {
    const config = readConfig();
    const sqlFile = path.join(PROJECT_ROOT, "db", "schema.sql");
    const graphqlFile = path.join(PROJECT_ROOT, "db", "schema.graphql");
    writeFileSync(sqlFile, dumpDatabaseSchema(config));
    writeFileSync(graphqlFile, await printGraphqlSchema(config));
    return { json: { files: [sqlFile, graphqlFile] }, text: ["wrote db/schema.sql", "wrote db/schema.graphql"] };
  },
};
