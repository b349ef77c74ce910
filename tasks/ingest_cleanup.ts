/*
 * Deletes spent per-minute rate-limit counters and daily salts older than the 8-day late-event
 * window (which makes old visitor hashes unlinkable). Idempotent; runs every five minutes.
 */
import type { Task } from "graphile-worker";

function assertPayload(payload: unknown): asserts payload is Record<string, unknown> {
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    throw new Error("ingest_cleanup: payload must be an object");
  }
}

const ingestCleanup: Task = async (payload, helpers) => {
  assertPayload(payload);
  await helpers.query("select app_private.ingest_cleanup()");
};

export default ingestCleanup;
