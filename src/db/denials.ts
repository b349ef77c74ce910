/*
 * Denied attempts outlive the request that made them. The request's transaction rolls back,
 * so the OM403 error's detail is written to the audit chain here, on an owner connection of
 * its own. Callers may await the returned promise; it never rejects.
 */
import type pg from "pg";
import { logger } from "../logger";

export const pendingDenials = new Set<Promise<void>>();

export function recordDenial(ownerPool: pg.Pool, detail: string | undefined): Promise<void> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(detail ?? "");
  } catch {
    parsed = { action: "unknown" };
  }
  const write = ownerPool
    .query("select app_private.record_denied_attempt($1::jsonb)", [JSON.stringify(parsed)])
    .then(() => undefined)
    .catch((error: Error) => logger.error({ err: error.message }, "could not record a denied attempt"));
  pendingDenials.add(write);
  void write.finally(() => pendingDenials.delete(write));
  return write;
}

/** Resolves once every denial recorded so far is durable (used at shutdown and in tests). */
export async function flushDenials(): Promise<void> {
  await Promise.all([...pendingDenials]);
}
