/*
 * `start` (setup + migrate + HTTP + worker: the one command a developer needs), and `serve` /
 * `worker` for production, where the two halves scale separately. All stop gracefully on
 * SIGTERM or SIGINT.
 */
import { readConfig } from "../../config";
import { migrateDatabase } from "../../db/migrate";
import { logger } from "../../logger";
import { startService } from "../../server";
import { Command } from "../command";
import { setupFromEnvironment } from "./database";

async function runUntilSignalled(options: { http: boolean; worker: boolean }, log: (line: string) => void) {
  const config = readConfig();
  const service = await startService(config, options);
  if (service.url) {
    log(`OpsMantik is listening on ${service.url}`);
    log(`  GraphQL:  ${service.url}/graphql   (Ruru: ${service.url}/graphiql)`);
    log(`  health:   ${service.url}/api/health`);
  }
  if (options.worker) log("worker running (tasks/, tasks/crontab)");
  const signal = await new Promise<string>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
  });
  log(`${signal} received: finishing in-flight work…`);
  const forced = setTimeout(() => {
    logger.error("shutdown took longer than 30 s; exiting");
    process.exit(1);
  }, 30_000);
  forced.unref();
  await service.stop();
  return { json: { stopped: signal }, text: ["stopped"] };
}

export const start: Command = {
  words: ["start"],
  summary: "Set up and migrate the database, then serve HTTP and run the worker in one process.",
  usage: "npm start   (or: npx opsmantik start)",
  options: {},
  async run(_values, io) {
    for (const change of await setupFromEnvironment(io.log)) io.log(`setup: ${change}`);
    await migrateDatabase(readConfig());
    io.log("database migrated");
    return runUntilSignalled({ http: true, worker: true }, io.log);
  },
};

export const serve: Command = {
  words: ["serve"],
  summary: "Serve HTTP only (production; the database must already be migrated).",
  usage: "npm run serve",
  options: {},
  run: (_values, io) => runUntilSignalled({ http: true, worker: false }, io.log),
};

export const worker: Command = {
  words: ["worker"],
  summary: "Run the background worker only (production).",
  usage: "npm run worker",
  options: {},
  run: (_values, io) => runUntilSignalled({ http: false, worker: true }, io.log),
};
