/*
 * Migrations through graphile-migrate's JavaScript API, with the settings in .gmrc and the
 * connection strings from our configuration. graphile-worker's own schema is installed first;
 * then committed migrations run; then, outside production, migrations/current (the work in
 * progress) runs once if it changed.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import JSON5 from "json5";
import { Logger } from "@graphile/logger";
import { migrate as gmMigrate, watch as gmWatch, Settings } from "graphile-migrate";
import { runMigrations as installWorkerSchema } from "graphile-worker";
import { Config, PROJECT_ROOT } from "../config";

export function migrationSettings(config: Config): Settings {
  const gmrc = JSON5.parse(readFileSync(path.join(PROJECT_ROOT, ".gmrc"), "utf8")) as Settings;
  process.env.DATABASE_AUTHENTICATOR = config.roles.authenticator;
  process.env.DATABASE_VISITOR = config.roles.visitor;
  return {
    ...gmrc,
    connectionString: config.databaseUrl,
    rootConnectionString: config.rootDatabaseUrl,
    shadowConnectionString: config.shadowDatabaseUrl,
    migrationsFolder: path.join(PROJECT_ROOT, "migrations"),
    logger: quietLogger,
  };
}

// graphile-migrate logs through @graphile/logger; we keep its warnings and errors only.
const quietLogger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") process.stderr.write(`migrate: ${message}\n`);
});

const workerMigrationLogger = new Logger(() => (level, message) => {
  if (level === "error") process.stderr.write(`worker schema: ${message}\n`);
});

export async function migrateDatabase(config: Config, { includeCurrent = process.env.NODE_ENV !== "production" } = {}): Promise<void> {
  const settings = migrationSettings(config);
  // Our functions enqueue jobs with graphile_worker.add_job in the same transaction as the row
  // that causes them, so the worker's schema must exist before any of them can run.
  await installWorkerSchema({ connectionString: config.databaseUrl, logger: workerMigrationLogger });
  await gmMigrate(settings);
  if (includeCurrent) await gmWatch(settings, true);
}
