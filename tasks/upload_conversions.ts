/*
 * Uploads one site's due conversions (and retractions) to Google. Enqueued in the same
 * transaction as the sale that caused it, by the sweep for expired leases and postponed rows,
 * and again by itself when a row is due later. Payload: {"site_id": "…", "provider": "google"}.
 */
import type { Task } from "graphile-worker";
import pg from "pg";
import { readConfig } from "../src/config";
import { deliverSiteConversions } from "../src/delivery/deliver";
import { makeRails, Rails } from "../src/delivery/rails";
import { Vault } from "../src/vault/vault";
import { assertObjectPayload } from "../src/worker/payload";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// One set of gRPC clients and one token cache per process, not per job.
let shared: { rails: Rails; vault: Vault; owner: pg.Pool } | undefined;
function sharedState(): NonNullable<typeof shared> {
  if (!shared) {
    const config = readConfig();
    shared = { rails: makeRails(config.google), vault: new Vault(config.vaultKeys), owner: new pg.Pool({ connectionString: config.databaseUrl, max: 2 }) };
  }
  return shared;
}

const uploadConversions: Task = async (payload, helpers) => {
  assertObjectPayload("upload_conversions", payload);
  if (typeof payload.site_id !== "string" || !UUID.test(payload.site_id) || (payload.provider ?? "google") !== "google") {
    throw new Error("upload_conversions: payload must be {site_id: uuid, provider: \"google\"}");
  }
  const { rails, vault, owner } = sharedState();
  const summary = await deliverSiteConversions({ owner, vault, rails, worker: `worker:${process.pid}:job:${helpers.job.id}` }, payload.site_id);
  if (summary.claimed > 0 || summary.skipped) helpers.logger.info(`site ${payload.site_id}: ${JSON.stringify(summary)}`);
};

export default uploadConversions;
