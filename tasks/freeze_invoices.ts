/*
 * Freezes every site's invoice for each month whose grace (8 days after its end) has passed,
 * once a day. Idempotent: a frozen month is left as it is.
 */
import type { Task } from "graphile-worker";

function assertPayload(payload: unknown): asserts payload is Record<string, unknown> {
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    throw new Error("freeze_invoices: payload must be an object");
  }
}

const freezeInvoices: Task = async (payload, helpers) => {
  assertPayload(payload);
  const { rows } = await helpers.query<{ frozen: number }>("select app_private.freeze_due_invoices() as frozen");
  if (rows[0].frozen > 0) helpers.logger.info(`froze ${rows[0].frozen} invoices`);
};

export default freezeInvoices;
