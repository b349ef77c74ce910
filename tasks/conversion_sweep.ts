/*
 * Every few minutes: an upload job for each site with conversions due (postponed rows whose
 * time has come, rows whose uploader died and whose lease ran out). Cheap when there are none.
 */
import type { Task } from "graphile-worker";
import { assertObjectPayload } from "../src/worker/payload";

const conversionSweep: Task = async (payload, helpers) => {
  assertObjectPayload("conversion_sweep", payload);
  const { rows } = await helpers.query<{ n: string }>(
    `select count(*) as n from (select app_private.enqueue_upload(site_id, 'google') from app_private.sites_with_due_conversions('google') site_id) s`);
  if (Number(rows[0].n) > 0) helpers.logger.info(`scheduled uploads for ${rows[0].n} sites`);
};

export default conversionSweep;
