/*
 * Carries out a right-to-erasure request, enqueued in the same transaction as the request.
 * The erasure is one transaction: a crash leaves nothing half-erased, and graphile-worker runs
 * the job again (up to 25 times, backing off). A failed attempt is recorded on the request, so
 * its status in GraphQL never looks like success. Payload: {"site_id", "request_id"}.
 */
import type { Task } from "graphile-worker";
import { uuidFields } from "../src/worker/payload";

const carryOutErasure: Task = async (payload, helpers) => {
  const { site_id: siteId, request_id: requestId } = uuidFields("carry_out_erasure", payload, ["site_id", "request_id"]);
  try {
    const { rows } = await helpers.query<{ receipt: Record<string, number> }>(
      "select app_private.carry_out_erasure($1, $2) as receipt", [siteId, requestId]);
    helpers.logger.info(`erasure ${requestId} completed: ${JSON.stringify(rows[0].receipt)}`);
  } catch (error) {
    await helpers.query(
      `update app_public.erasure_requests set status = 'failed', attempts = attempts + 1, last_error = $3
        where site_id = $1 and id = $2 and status <> 'completed'`,
      [siteId, requestId, "The erasure attempt failed; it is retried automatically."]);
    throw error;
  }
};

export default carryOutErasure;
