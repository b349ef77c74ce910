/*
 * Uploads one site's due conversions (and retractions) to Google. Enqueued in the same
 * transaction as the sale that caused it, by the sweep for expired leases and postponed rows,
 * and again by itself when a row is due later. Payload: {"site_id": "…", "provider": "google"}.
 */
import type { Task } from "graphile-worker";
import pg from "pg";
import { readConfig } from "../src/config";
import { CONNECTIONS_PER_DELIVERY, deliverSiteConversions } from "../src/delivery/deliver";
import { makeRails, Rails } from "../src/delivery/rails";
import { Vault } from "../src/vault/vault";
import { WORKER_CONCURRENCY } from "../src/worker/runner";
import { uuidFields } from "../src/worker/payload";

// One set of gRPC clients and one token cache per process, not per job.
let shared: { rails: Rails; vault: Vault; owner: pg.Pool } | undefined;
/** Connections of the uploaders' own pool: what one delivery holds at once, for each job the worker runs at once. */
const OWNER_POOL_SIZE = CONNECTIONS_PER_DELIVERY * WORKER_CONCURRENCY;
function sharedState(): NonNullable<typeof shared> {
  if (!shared) {
    const config = readConfig();
    // Nothing ends this pool when the worker stops, so idle connections must not keep the
    // process alive (a stopped service would otherwise linger until they time out).
    const owner = new pg.Pool({ connectionString: config.databaseUrl, max: OWNER_POOL_SIZE, application_name: "opsmantik-uploader", allowExitOnIdle: true });
    shared = { rails: makeRails(config.google), vault: new Vault(config.vaultKeys), owner };
  }
  return shared;
}

const uploadConversions: Task = async (payload, helpers) => {
  const { site_id: siteId } = uuidFields("upload_conversions", payload, ["site_id"]);
  if (((payload as { provider?: unknown }).provider ?? "google") !== "google") throw new Error("upload_conversions: provider must be \"google\"");
  const { rails, vault, owner } = sharedState();
  const summary = await deliverSiteConversions({ owner, vault, rails }, siteId);
  if (summary.claimed > 0 || summary.skipped) helpers.logger.info(`site ${siteId}: ${JSON.stringify(summary)}`);
};

export default uploadConversions;
