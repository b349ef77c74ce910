/*
 * Every 5 minutes: Watchtower's checks for every site (app_private.run_watchtower), each
 * verdict stored in app_public.watchtower_checks for the site's people to see in GraphQL.
 */
import type { Task } from "graphile-worker";
import { assertObjectPayload } from "../src/worker/payload";

const watchtower: Task = async (payload, helpers) => {
  assertObjectPayload("watchtower", payload);
  const { rows: [{ verdicts }] } = await helpers.query<{ verdicts: number }>("select app_private.run_watchtower() as verdicts");
  helpers.logger.debug(`watchtower: ${verdicts} verdicts`);
};

export default watchtower;
