/*
 * GET /api/oci/export.csv[?conversion_name=Sale]: the site's click conversions in the CSV that
 * Google Ads' scheduled uploads fetch. HTTP Basic with the site's export credential (password
 * compared as SHA-256 in constant time), or a Bearer API key of an editor or admin.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { NextFunction, Request, Response } from "express";
import type pg from "pg";
import { logger } from "../logger";
import { sendError } from "./errors";

const CHALLENGE = { "WWW-Authenticate": 'Basic realm="opsmantik-oci", charset="UTF-8"' };
// Burns the same time as a real comparison when the username is unknown.
const DUMMY_HASH = createHash("sha256").update("no such export credential").digest();

async function siteFromBasic(header: string, authPool: pg.Pool): Promise<string | undefined> {
  const decoded = Buffer.from(header.slice(6).trim(), "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 1) return undefined;
  const username = decoded.slice(0, colon);
  const offered = createHash("sha256").update(decoded.slice(colon + 1)).digest();
  const { rows } = await authPool.query<{ site_id: string; password_sha256: Buffer }>(
    "select site_id, password_sha256 from app_private.export_credential_for($1)", [username.slice(0, 100)]);
  const matches = timingSafeEqual(offered, rows[0]?.password_sha256 ?? DUMMY_HASH);
  return rows[0] && matches ? rows[0].site_id : undefined;
}

export function ociExportHandler(authPool: pg.Pool) {
  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    try {
      const header = req.headers.authorization ?? "";
      let siteId: string | undefined;
      if (/^Basic /i.test(header)) {
        siteId = await siteFromBasic(header, authPool);
        if (!siteId) return sendError(res, 401, "invalid_credentials", "The export username or password is wrong.", CHALLENGE);
      } else if (req.auth?.apiKeyId) {
        if (req.auth.role !== "editor" && req.auth.role !== "admin") return sendError(res, 403, "forbidden", "The conversion export needs an editor or admin API key.");
        siteId = req.auth.siteId;
      } else {
        return sendError(res, 401, "unauthenticated", "Send the site's export credential (HTTP Basic) or an API key.", CHALLENGE);
      }
      const name = typeof req.query.conversion_name === "string" ? req.query.conversion_name : "OpsMantik sale";
      if (name.length === 0 || name.length > 100 || /[\u0000-\u001f]/.test(name)) {
        return sendError(res, 400, "invalid_conversion_name", "conversion_name must be 1 to 100 characters, as the conversion action is named in Google Ads.");
      }
      const { rows } = await authPool.query<{ line: string }>("select line from app_private.oci_export_lines($1, $2) line", [siteId, name]);
      res.status(200);
      res.setHeader("Content-Type", "text/csv; charset=utf-8");
      res.setHeader("Cache-Control", "no-store");
      res.end(rows.map((row) => `${row.line}\n`).join(""));
    } catch (error) {
      logger.error({ err: (error as Error).message }, "conversion export failed");
      if (!res.headersSent) return sendError(res, 500, "internal", "Something went wrong on our side.");
      next(error);
    }
  };
}
