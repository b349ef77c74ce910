/*
 * GET /api/health for load balancers: {status, db, migrations, worker}.
 *   db          "ok" or "unreachable" (then 503: this instance cannot serve anything)
 *   migrations  "current" or "pending" (committed files not yet applied)
 *   worker      "ok" while some worker completed a heartbeat job in the last WORKER_STALE_S
 *               seconds, else "stale" (or "unknown" before the first beat)
 * status is "ok" only when all three are; otherwise "degraded" (HTTP still serves).
 */
import { readdirSync } from "node:fs";
import path from "node:path";
import type { Request, Response } from "express";
import type pg from "pg";
import { PROJECT_ROOT } from "../config";

const WORKER_STALE_S = 150;

function committedMigrationCount(): number {
  try {
    return readdirSync(path.join(PROJECT_ROOT, "migrations", "committed")).filter((f) => /^\d+.*\.sql$/.test(f)).length;
  } catch {
    return 0;
  }
}

export function healthHandler(ownerPool: pg.Pool) {
  const expectedMigrations = committedMigrationCount();
  return async (_req: Request, res: Response): Promise<void> => {
    res.setHeader("Cache-Control", "no-store");
    let applied: number;
    let beatAge: number | null;
    try {
      const { rows } = await ownerPool.query(`
        select (select count(*) from graphile_migrate.migrations)::int as applied,
               (select extract(epoch from now() - max(beat_at)) from app_private.worker_heartbeats)::float8 as beat_age`);
      applied = rows[0].applied;
      beatAge = rows[0].beat_age;
    } catch (error) {
      // The database answers but our tables are missing: not migrated yet.
      if (["42P01", "3F000"].includes((error as { code?: string }).code ?? "")) {
        res.status(503).json({ status: "unavailable", db: "ok", migrations: "pending", worker: "unknown" });
        return;
      }
      res.status(503).json({ status: "unavailable", db: "unreachable", migrations: "unknown", worker: "unknown" });
      return;
    }
    const migrations = applied >= expectedMigrations ? "current" : "pending";
    const worker = beatAge === null ? "unknown" : beatAge <= WORKER_STALE_S ? "ok" : "stale";
    const status = migrations === "current" && worker === "ok" ? "ok" : "degraded";
    res.json({ status, db: "ok", migrations, worker });
  };
}
