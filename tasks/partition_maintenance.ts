/*
 * Keeps pg_partman's monthly sets (ledger, events, sessions) ahead of time: partitions exist
 * four months ahead, so a month boundary never sends rows to a default partition, and new
 * partitions get row-level security like their parents. Idempotent; runs hourly.
 */
import type { Task } from "graphile-worker";

function assertPayload(payload: unknown): asserts payload is Record<string, unknown> {
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    throw new Error("partition_maintenance: payload must be an object");
  }
}

const partitionMaintenance: Task = async (payload, helpers) => {
  assertPayload(payload);
  const { rows } = await helpers.query<{ secured: number }>("select app_private.maintain_partitions() as secured");
  if (rows[0].secured > 0) helpers.logger.info(`secured ${rows[0].secured} new partitions`);
};

export default partitionMaintenance;
