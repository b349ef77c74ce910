/*
 * POST /api/sales/confirm: a CRM reports a won deal (SPEC §5.3). The body's shape is checked
 * here; everything else (role, currency, time window, attribution, the queued conversion and
 * its upload job, in one transaction) is app_public.confirm_sale_and_enqueue.
 *
 * Auth: `Bearer <API key>` of the site, editor or admin (the site is the key's); a dashboard
 * token works too, naming the site with site_id.
 */
import express, { Request, Response, Router } from "express";
import type pg from "pg";
import type { Config } from "../config";
import { asRequest } from "../db/as-request";
import { recordDenial } from "../db/denials";
import { publicDatabaseError } from "../db/errors";
import { logger } from "../logger";
import { sendError } from "./errors";
import { NOT_STORABLE, storable } from "./ingest";
import { isUuid } from "../uuid";

const MAX_BODY_BYTES = 16 * 1024;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)$/;
const DECIMAL = /^\d{1,12}(\.\d{1,4})?$/;
const TEXT_FIELDS = ["external_id", "currency", "occurred_at", "session_id", "visitor_id", "call_id", "gclid", "email", "phone", "site_id"] as const;
const FIELDS = new Set<string>([...TEXT_FIELDS, "amount", "consent"]);

class InvalidSale extends Error {}

interface SaleInput {
  siteId: string;
  externalId: string;
  amount: string;
  currency: string;
  occurredAt: string;
  sessionId: string | null;
  visitorId: string | null;
  callId: string | null;
  gclid: string | null;
  email: string | null;
  phone: string | null;
  consent: string | null;
}

function parseSale(body: unknown, keySiteId: string | undefined): SaleInput {
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw new InvalidSale("The body must be a JSON object.");
  const fields = body as Record<string, unknown>;
  for (const name of Object.keys(fields)) if (!FIELDS.has(name)) throw new InvalidSale(`Unknown field ${JSON.stringify(name.slice(0, 40))}.`);
  if (!storable(fields)) throw new InvalidSale(NOT_STORABLE);
  for (const name of TEXT_FIELDS) {
    if (fields[name] !== undefined && fields[name] !== null && typeof fields[name] !== "string") throw new InvalidSale(`${name} must be a string.`);
  }
  const text = (name: (typeof TEXT_FIELDS)[number]) => (typeof fields[name] === "string" && fields[name] !== "" ? (fields[name] as string) : null);

  const siteId = keySiteId ?? text("site_id");
  if (!isUuid(siteId)) throw new InvalidSale("site_id must be the site's id (it is implied by an API key).");
  if (keySiteId && text("site_id") && text("site_id")!.toLowerCase() !== keySiteId.toLowerCase()) {
    throw new InvalidSale("site_id names another site than the API key's.");
  }
  const externalId = text("external_id");
  if (!externalId) throw new InvalidSale("external_id is required.");
  const amount = typeof fields.amount === "number" && Number.isFinite(fields.amount) && fields.amount >= 0 ? String(fields.amount) : fields.amount;
  if (typeof amount !== "string" || !DECIMAL.test(amount)) {
    throw new InvalidSale("amount must be a non-negative decimal like \"1250.00\" (at most 12 digits before the point and 4 after).");
  }
  const currency = text("currency");
  if (!currency) throw new InvalidSale("currency is required (ISO 4217, like TRY).");
  const occurredAt = text("occurred_at");
  if (!occurredAt || !TIMESTAMP.test(occurredAt) || Number.isNaN(Date.parse(occurredAt))) {
    throw new InvalidSale("occurred_at must be an ISO-8601 time with a zone, like 2026-11-23T14:05:00+03:00.");
  }
  const sessionId = text("session_id");
  if (sessionId && !isUuid(sessionId)) throw new InvalidSale("session_id must be a UUID.");
  const consent = fields.consent;
  if (consent !== undefined && consent !== null && (typeof consent !== "object" || Array.isArray(consent))) {
    throw new InvalidSale("consent must be an object like {\"ad_user_data\":\"granted\",\"ad_personalization\":\"denied\"}.");
  }
  return {
    siteId, externalId, amount, currency, occurredAt, sessionId,
    visitorId: text("visitor_id"), callId: text("call_id"), gclid: text("gclid"), email: text("email"), phone: text("phone"),
    consent: consent ? JSON.stringify(consent) : null,
  };
}

export function salesRouter(config: Config, pools: { auth: pg.Pool; owner: pg.Pool }): Router {
  const router = express.Router();
  const checkRequest = (req: Request, res: Response, next: express.NextFunction) => {
    if (!req.auth?.apiKeyId && !req.auth?.userId) return sendError(res, 401, "unauthenticated", "Send the site's API key as `Authorization: Bearer om_…`.");
    if (!req.is("application/json")) return sendError(res, 415, "unsupported_media_type", "Send the sale as application/json.");
    next();
  };
  router.post("/sales/confirm", checkRequest, express.json({ limit: MAX_BODY_BYTES, strict: false }), async (req: Request, res: Response) => {
    let sale: SaleInput;
    try {
      sale = parseSale(req.body, req.auth?.siteId);
    } catch (error) {
      return sendError(res, 400, "invalid_sale", (error as InvalidSale).message);
    }
    try {
      const result = await asRequest(pools.auth, config, req.auth, async (client) => {
        const { rows: [confirmed] } = await client.query(
          `select to_jsonb(s) as sale from app_public.confirm_sale_and_enqueue($1, $2, $3::numeric, $4, $5::timestamptz, $6::uuid, $7, $8, $9, $10, $11, $12::jsonb) s`,
          [sale.siteId, sale.externalId, sale.amount, sale.currency, sale.occurredAt, sale.sessionId, sale.visitorId, sale.callId,
            sale.gclid, sale.email, sale.phone, sale.consent]);
        const { rows: [queued] } = await client.query(
          `select to_jsonb(q) - 'locked_by' - 'locked_until' as conversion from app_public.offline_conversion_queue q
            where q.site_id = $1 and q.sale_id = $2 and q.kind = 'conversion'`, [sale.siteId, confirmed.sale.id]);
        return { sale: confirmed.sale, conversion: queued?.conversion ?? null };
      });
      res.status(201).json(result);
    } catch (error) {
      const known = publicDatabaseError(error);
      if (known) {
        if ((error as { code?: string }).code === "OM403") void recordDenial(pools.owner, (error as { detail?: string }).detail);
        return sendError(res, known.status, known.code, known.message);
      }
      const { code, message } = error as { code?: string; message?: string };
      if (code === "22008" || code === "22007") return sendError(res, 400, "invalid_sale", "occurred_at is not a real date and time.");
      logger.error({ err: message, code }, "sale confirmation failed");
      sendError(res, 500, "internal", "Something went wrong on our side; nothing was stored.");
    }
  });
  return router;
}
