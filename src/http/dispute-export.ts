/*
 * GET /api/billing/dispute-export.csv?period=YYYY-MM[&site=ID]: a site's idempotency ledger
 * for one month, for its owners and admins (JWT, or an admin API key, whose site is implied).
 *
 * The first three columns are exactly the lines the invoice digest hashes (SPEC §9), in the
 * same order, so `tail -n +2 | cut -d, -f1-3 | sha256sum` reproduces invoice_snapshots.ledger_digest.
 * Rows come from a database cursor a few thousand at a time and are written with backpressure:
 * memory stays flat however large the month is.
 */
import type { Request, Response } from "express";
import type pg from "pg";
import type { Config } from "../config";
import { recordDenial } from "../db/denials";
import { logger } from "../logger";
import { pgSettingsFor } from "./auth-context";
import { sendError } from "./errors";

const FETCH_ROWS = 5000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const DISPUTE_EXPORT_HEADER = "idempotency_key,occurred_at,billable,received_at,reason";

function write(res: Response, chunk: string): Promise<void> {
  return res.write(chunk) ? Promise.resolve() : new Promise((resolve) => res.once("drain", resolve));
}

export function disputeExportHandler(config: Config, pools: { auth: pg.Pool; owner: pg.Pool }) {
  return async (req: Request, res: Response): Promise<void> => {
    const period = typeof req.query.period === "string" ? req.query.period : "";
    const match = /^(\d{4})-(0[1-9]|1[0-2])$/.exec(period);
    if (!match) return sendError(res, 400, "invalid_period", "period must be a month as YYYY-MM.");
    const siteId = typeof req.query.site === "string" ? req.query.site.toLowerCase() : req.auth?.siteId;
    if (!req.auth?.userId && !req.auth?.apiKeyId) return sendError(res, 401, "unauthenticated", "Send a dashboard token or an API key.");
    if (!siteId || !UUID.test(siteId)) return sendError(res, 400, "invalid_site", "site must be the site's id (implied for an API key).");
    const periodStart = `${match[1]}-${match[2]}-01`;

    const client = await pools.auth.connect();
    let streaming = false;
    try {
      await client.query("begin read only");
      const settings = pgSettingsFor(config, req.auth);
      await client.query("select set_config('role', $1, true), set_config('app.user_id', $2, true), set_config('app.api_key_id', $3, true)",
        [settings.role, settings["app.user_id"], settings["app.api_key_id"]]);
      await client.query("select app_hidden.assert_site_role($1::uuid, 'admin', 'dispute_export', 'ingest_idempotency', $1::text)", [siteId]);
      const { rows: snapshot } = await client.query(
        "select ledger_digest from app_public.invoice_snapshots where site_id = $1 and period = $2", [siteId, periodStart]);
      await client.query(
        `declare dispute_export no scroll cursor for
           select app_hidden.ledger_line(l.idempotency_key, l.occurred_at, l.billable) || ','
                  || pg_catalog.to_char(l.received_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || ','
                  || coalesce(l.reason, '') as line
             from app_public.ingest_idempotency l
            where l.site_id = $1 and l.occurred_at >= $2::date and l.occurred_at < $2::date + interval '1 month'
            order by l.idempotency_key::text collate "C"`, [siteId, periodStart]);

      res.status(200);
      res.setHeader("Content-Type", "text/csv; charset=utf-8");
      res.setHeader("Content-Disposition", `attachment; filename="ledger-${siteId}-${period}.csv"`);
      res.setHeader("Cache-Control", "no-store");
      if (snapshot[0]) res.setHeader("X-Invoice-Ledger-Digest", snapshot[0].ledger_digest);
      streaming = true;
      await write(res, `${DISPUTE_EXPORT_HEADER}\n`);
      for (;;) {
        const { rows } = await client.query<{ line: string }>(`fetch ${FETCH_ROWS} from dispute_export`);
        if (rows.length === 0) break;
        await write(res, rows.map((r) => `${r.line}\n`).join(""));
      }
      await client.query("commit");
      res.end();
    } catch (error) {
      await client.query("rollback").catch(() => {});
      const { code, detail } = error as { code?: string; detail?: string };
      if (streaming) {
        logger.error({ err: (error as Error).message }, "dispute export failed while streaming");
        res.destroy(); // a truncated CSV must not look complete
      } else if (code === "OM403") {
        void recordDenial(pools.owner, detail);
        sendError(res, 403, "forbidden", "Only the site's owners and admins may export its ledger.");
      } else {
        logger.error({ err: (error as Error).message, code }, "dispute export failed");
        sendError(res, 500, "internal", "Something went wrong on our side.");
      }
    } finally {
      client.release();
    }
  };
}
