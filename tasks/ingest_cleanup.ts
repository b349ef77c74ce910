/*
 * Deletes spent per-minute rate-limit counters and daily salts older than the 8-day late-event
 * window (which makes old visitor hashes unlinkable). Idempotent; runs every five minutes.
 */
import type { Task } from "graphile-worker";
import { assertObjectPayload } from "../src/worker/payload";

const ingestCleanup: Task = async (payload, helpers) => {
  assertObjectPayload("ingest_cleanup", payload);
  await helpers.query("select app_private.ingest_cleanup()");
};

export default ingestCleanup;
