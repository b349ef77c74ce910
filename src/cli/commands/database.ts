/* `setup` and `migrate`: prepare the database; both idempotent. */
import { readConfig } from "../../config";
import { migrateDatabase } from "../../db/migrate";
import { ensureDevEnvFile } from "../../setup/env-file";
import { setup } from "../../setup/setup";
import { Command } from "../command";

/** Setup for a developer machine: .env secrets first, then roles, database and extensions. */
export async function setupFromEnvironment(log: (line: string) => void): Promise<string[]> {
  // Production settings come from the real environment; only a developer machine gets a .env.
  const added = process.env.NODE_ENV === "production" ? [] : ensureDevEnvFile();
  const config = readConfig();
  const report = await setup(config, {
    ownerPassword: process.env.OWNER_PASSWORD,
    authenticatorPassword: process.env.AUTHENTICATOR_PASSWORD,
    log,
  });
  return [...added.map((name) => `generated ${name} into .env`), ...report.changes];
}

export const setupCommand: Command = {
  words: ["setup"],
  summary: "Create the database, roles and extensions where missing (idempotent).",
  usage: "npx opsmantik setup [--json]",
  options: {},
  async run(_values, io) {
    const changes = await setupFromEnvironment(io.log);
    return { json: { changes }, text: changes.length ? changes : ["nothing to do: the database is set up"] };
  },
};

export const migrateCommand: Command = {
  words: ["migrate"],
  summary: "Apply pending migrations (and, outside production, migrations/current).",
  usage: "npx opsmantik migrate [--json]",
  options: {},
  async run() {
    await migrateDatabase(readConfig());
    return { json: { migrated: true }, text: ["migrations applied"] };
  },
};
