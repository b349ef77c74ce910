/*
 * POST /api/call-event/v2: signed webhooks from the call-tracking provider (SPEC §5.2).
 *
 * X-OpsMantik-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
 * The MAC is computed over the exact bytes received, compared in constant time against the
 * site's current and previous secrets (both, always, so timing says nothing about which), and
 * accepted only within 300 s of t. A replayed request inside that window is harmless: the
 * call is idempotent by call_id.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import express, { Request, Response, Router } from "express";
import type pg from "pg";
import { logger } from "../logger";
import { sendError } from "./errors";
import { NOT_STORABLE, storable, storableText } from "./ingest";

export const SIGNATURE_HEADER = "x-opsmantik-signature";
export const SIGNATURE_TOLERANCE_S = 300;
const MAX_BODY_BYTES = 64 * 1024;

/** The signature a sender computes: exported for providers' reference and for tests. */
export function signCallEvent(secret: string, rawBody: string | Buffer, timestamp: number): string {
  const mac = createHmac("sha256", secret).update(`${timestamp}.`).update(rawBody).digest("hex");
  return `t=${timestamp},v1=${mac}`;
}

function parseSignature(header: string | undefined): { t: number; macs: Buffer[] } | undefined {
  if (!header || header.length > 1000) return undefined;
  let t: number | undefined;
  const macs: Buffer[] = [];
  for (const part of header.split(",")) {
    const [key, value] = part.trim().split("=", 2);
    if (key === "t" && /^\d{1,12}$/.test(value ?? "")) t = Number(value);
    else if (key === "v1" && /^[0-9a-f]{64}$/i.test(value ?? "")) macs.push(Buffer.from(value, "hex"));
  }
  return t === undefined || macs.length === 0 ? undefined : { t, macs };
}

function macMatches(secrets: string[], t: number, raw: Buffer, macs: Buffer[]): boolean {
  let matched = false;
  for (const secret of secrets) {
    const expected = createHmac("sha256", secret).update(`${t}.`).update(raw).digest();
    for (const mac of macs) matched = timingSafeEqual(expected, mac) || matched;
  }
  return matched;
}

export function callEventRouter(authPool: pg.Pool): Router {
  const router = express.Router();
  router.post(
    "/call-event/v2",
    express.raw({ type: () => true, limit: MAX_BODY_BYTES }),
    async (req: Request, res: Response) => {
      const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const signature = parseSignature(req.header(SIGNATURE_HEADER));
      if (!signature) return sendError(res, 401, "invalid_signature", `Send ${SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256>.`);
      if (Math.abs(Date.now() / 1000 - signature.t) > SIGNATURE_TOLERANCE_S) {
        return sendError(res, 401, "stale_signature", `The signature's timestamp is more than ${SIGNATURE_TOLERANCE_S} seconds from now.`);
      }
      let body: unknown;
      try {
        body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(raw));
      } catch {
        return sendError(res, 400, "invalid_json", "The body is not valid JSON.");
      }
      const site = body !== null && typeof body === "object" && !Array.isArray(body) ? (body as { site?: unknown }).site : undefined;
      // The site is looked up before the signature can be checked, so it must be storable text
      // already: the driver would send a lone surrogate as U+FFFD, and a 403 would hide why.
      if (typeof site !== "string" || !storableText(site)) {
        return sendError(res, 400, "invalid_envelope", "The body must be an object with site, call_id, status and started_at.");
      }
      try {
        const { rows } = await authPool.query<{ site_id: string; current_secret: string; previous_secret: string | null }>(
          "select site_id, current_secret, previous_secret from app_private.call_event_secrets_for($1)", [site]);
        if (rows.length === 0) return sendError(res, 403, "unknown_site", "No site has this key.");
        const secrets = [rows[0].current_secret, rows[0].previous_secret].filter((s): s is string => !!s);
        if (!macMatches(secrets, signature.t, raw, signature.macs)) {
          return sendError(res, 401, "invalid_signature", "The signature does not match this body and the site's secret.");
        }
        if (!storable(body)) return sendError(res, 400, "invalid_call_event", NOT_STORABLE);
        const { rows: [recorded] } = await authPool.query("select app_private.record_call_event($1, $2::jsonb) as result",
          [rows[0].site_id, JSON.stringify(body)]);
        res.status(200).json(recorded.result);
      } catch (error) {
        const { code, message } = error as { code?: string; message?: string };
        if (code === "OMCAL") return sendError(res, 400, "invalid_call_event", message ?? "The call event is not valid.");
        logger.error({ err: message, code }, "call event failed");
        sendError(res, 500, "call_event_unavailable", "The call event could not be stored; retry later.");
      }
    },
  );
  return router;
}
