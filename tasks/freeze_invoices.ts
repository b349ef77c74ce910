/*
 * Freezes every site's invoice for each month whose grace (8 days after its end) has passed,
 * once a day. Idempotent: a frozen month is left as it is.
 */
import type { Task } from "graphile-worker";
import { assertObjectPayload } from "../src/worker/payload";

const freezeInvoices: Task = async (payload, helpers) => {
  assertObjectPayload("freeze_invoices", payload);
  const { rows } = await helpers.query<{ frozen: number }>("select app_private.freeze_due_invoices() as frozen");
  if (rows[0].frozen > 0) helpers.logger.info(`froze ${rows[0].frozen} invoices`);
};

export default freezeInvoices;
