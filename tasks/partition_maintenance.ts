/*
 * Keeps pg_partman's monthly sets (ledger, events, sessions) ahead of time: partitions exist
 * four months ahead, so a month boundary never sends rows to a default partition, and new
 * partitions get row-level security like their parents. Idempotent; runs hourly.
 */
import type { Task } from "graphile-worker";
import { assertObjectPayload } from "../src/worker/payload";

const partitionMaintenance: Task = async (payload, helpers) => {
  assertObjectPayload("partition_maintenance", payload);
  const { rows } = await helpers.query<{ secured: number }>("select app_private.maintain_partitions() as secured");
  if (rows[0].secured > 0) helpers.logger.info(`secured ${rows[0].secured} new partitions`);
};

export default partitionMaintenance;
