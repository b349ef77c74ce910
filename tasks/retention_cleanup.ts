/*
 * Nightly: personal data past its retention is deleted or stripped (see docs/PRIVACY.md for
 * the schedule). Whole monthly partitions older than 13 months go with partition maintenance.
 */
import type { Task } from "graphile-worker";
import { assertObjectPayload } from "../src/worker/payload";

const retentionCleanup: Task = async (payload, helpers) => {
  assertObjectPayload("retention_cleanup", payload);
  const { rows } = await helpers.query<{ result: Record<string, number> }>("select app_private.retention_cleanup() as result");
  if (Object.values(rows[0].result).some((count) => count > 0)) helpers.logger.info(`retention: ${JSON.stringify(rows[0].result)}`);
};

export default retentionCleanup;
