/*
 * GET /api/billing/dispute-export.csv?period=YYYY-MM[&site=ID]: a site's idempotency ledger
 * for one month, for its owners and admins (JWT, or an admin API key, whose site is implied).
 *
 * The first three columns are exactly the lines the invoice digest hashes (SPEC §9), in the
 * same order, so `tail -n +2 | cut -d, -f1-3 | sha256sum` reproduces invoice_snapshots.ledger_digest.
 * Rows are streamed with COPY … TO STDOUT straight into the response, with backpressure:
 * memory stays flat however large the month is.
 */
import { pipeline } from "node:stream/promises";
import type { Request, Response } from "express";
import pg from "pg";
import { to as copyTo } from "pg-copy-streams";
import type { Config } from "../config";
import { actAs } from "../db/as-request";
import { recordDenial } from "../db/denials";
import { logger } from "../logger";
import { sendError } from "./errors";
import { isUuid } from "../uuid";
import { holdYoungGeneration } from "../young-generation";

export const DISPUTE_EXPORT_HEADER = "idempotency_key,occurred_at,billable,received_at,reason";

export function disputeExportHandler(config: Config, pools: { auth: pg.Pool; owner: pg.Pool }) {
  return async (req: Request, res: Response): Promise<void> => {
    const period = typeof req.query.period === "string" ? req.query.period : "";
    const match = /^(\d{4})-(0[1-9]|1[0-2])$/.exec(period);
    if (!match) return sendError(res, 400, "invalid_period", "period must be a month as YYYY-MM.");
    const siteId = typeof req.query.site === "string" ? req.query.site.toLowerCase() : req.auth?.siteId;
    if (!req.auth?.userId && !req.auth?.apiKeyId) return sendError(res, 401, "unauthenticated", "Send a dashboard token or an API key.");
    if (!isUuid(siteId)) return sendError(res, 400, "invalid_site", "site must be the site's id (implied for an API key).");
    const periodStart = `${match[1]}-${match[2]}-01`;

    const client = await pools.auth.connect();
    let streaming = false;
    let broken = false;
    let releaseYoungGeneration = () => {};
    try {
      await client.query("begin read only");
      await actAs(client, config, req.auth);
      await client.query("select app_hidden.assert_site_role($1::uuid, 'admin', 'dispute_export', 'ingest_idempotency', $1::text)", [siteId]);
      const { rows: snapshot } = await client.query(
        "select ledger_digest from app_public.invoice_snapshots where site_id = $1 and period = $2", [siteId, periodStart]);
      // COPY streams rows straight from the server into the response (no per-row objects);
      // it takes no bind parameters, so the (validated) site and month are quoted literals.
      // CSV format quotes a field only when it must (a reason with a comma, quote or newline);
      // the first three never need it: they are app_hidden.ledger_line's pieces, the digest's lines.
      const copy = client.query(copyTo(
        `copy (select l.idempotency_key::text, app_hidden.ledger_time(l.occurred_at), l.billable::text,
                      app_hidden.ledger_time(l.received_at), l.reason
                 from app_public.ingest_idempotency l
                where l.site_id = ${pg.escapeLiteral(siteId)}::uuid
                  and l.occurred_at >= (${pg.escapeLiteral(periodStart)}::date)::timestamp at time zone 'UTC'
                  and l.occurred_at < (${pg.escapeLiteral(periodStart)}::date + interval '1 month')::timestamp at time zone 'UTC'
                order by l.idempotency_key::text collate "C", l.occurred_at) to stdout with (format csv)`));

      res.status(200);
      res.setHeader("Content-Type", "text/csv; charset=utf-8");
      res.setHeader("Content-Disposition", `attachment; filename="ledger-${siteId}-${period}.csv"`);
      res.setHeader("Cache-Control", "no-store");
      if (snapshot[0]) res.setHeader("X-Invoice-Ledger-Digest", snapshot[0].ledger_digest);
      streaming = true;
      // ~100 MB of COPY output per million rows passes through short-lived Buffers; without the
      // hold V8 grows its young generation for it and keeps the ~30 MB (see young-generation.ts).
      releaseYoungGeneration = holdYoungGeneration();
      res.write(`${DISPUTE_EXPORT_HEADER}\n`);
      await pipeline(copy, res, { end: false });
      await client.query("commit");
      res.end();
    } catch (error) {
      if (!streaming) await client.query("rollback").catch(() => {});
      const { code, detail } = error as { code?: string; detail?: string };
      if (streaming) {
        broken = true; // the connection may still be inside COPY: discard it
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
      releaseYoungGeneration();
      client.release(broken);
    }
  };
}
