/*
 * Drops idempotency-ledger partitions once their month is past retention (LEDGER_RETENTION_DAYS,
 * default and minimum 90) and every site's invoice for that month is frozen. Never earlier:
 * the database function refuses unfrozen months and shorter retention. Runs daily.
 */
import type { Task } from "graphile-worker";
import { assertObjectPayload } from "../src/worker/payload";
import { readConfig } from "../src/config";

const ledgerCleanup: Task = async (payload, helpers) => {
  assertObjectPayload("ledger_cleanup", payload);
  const { rows } = await helpers.query<{ dropped: string[] }>(
    "select app_private.drop_expired_ledger_partitions($1) as dropped", [readConfig().ledgerRetentionDays]);
  if (rows[0].dropped.length > 0) helpers.logger.info(`dropped ledger partitions: ${rows[0].dropped.join(", ")}`);
};

export default ledgerCleanup;
