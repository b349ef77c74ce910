/*
 * Proves the worker is alive by completing a job: GET /api/health reports the worker healthy
 * only while these heartbeats keep coming. Runs every minute from the crontab and once when a
 * worker starts.
 */
import type { Task } from "graphile-worker";
import { hostname } from "node:os";
import { assertObjectPayload } from "../src/worker/payload";

interface HeartbeatPayload {
  worker_name?: string;
}

function assertPayload(payload: unknown): asserts payload is HeartbeatPayload {
  assertObjectPayload("worker_heartbeat", payload);
  const name = (payload as HeartbeatPayload).worker_name;
  if (name !== undefined && (typeof name !== "string" || name.length > 200)) {
    throw new Error("worker_heartbeat: worker_name must be a short string");
  }
}

const workerHeartbeat: Task = async (payload, helpers) => {
  assertPayload(payload);
  await helpers.query("select app_private.record_worker_heartbeat($1)", [payload.worker_name ?? hostname()]);
};

export default workerHeartbeat;
