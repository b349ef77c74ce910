/* Re-creates the test database from scratch and migrates it: every run starts clean. */
import "../src/polyfills";
import "./helpers/env";
import { readConfig } from "../src/config";
import { migrateDatabase } from "../src/db/migrate";
import { setup } from "../src/setup/setup";

export default async function globalSetup(): Promise<void> {
  const config = readConfig();
  await setup(config, { recreate: true });
  await migrateDatabase(config);
}
