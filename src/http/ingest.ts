/*
 * POST /api/sync and POST /api/consent: the tracker's endpoints. Deliberately thin: check
 * size, media type and JSON shape here, then hand the request to one SQL function, which does
 * the origin check, rate limit, validation, ledger, events and sessions atomically. Under load,
 * sync requests that queue for a connection share one commit (ingest-coalescer.ts); each
 * still runs as its own unit of all or nothing.
 *
 * POST /api/sync is the one route served on node's own request and response objects
 * (syncEndpoint, reached from app.ts's request listener): it carries nearly all the traffic, and
 * express's router and response helpers cost more per request than the rest of its handling.
 *
 * CORS fails closed: a preflight is answered only for an origin some site allows (or the
 * global ALLOWED_ORIGINS); the POST itself is checked against the site's own list in SQL.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { NextFunction, Request, Response, Router } from "express";
import express from "express";
import type pg from "pg";
import type { Config } from "../config";
import { logger } from "../logger";
import { sendError, writeJson } from "./errors";
import { IngestCoalescer } from "./ingest-coalescer";

export const MAX_BODY_BYTES = 64 * 1024;
export const MAX_EVENTS = 100;
const MAX_EVENT_DEPTH = 8;

class RequestError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

// One decoder for every request: without { stream: true } each decode starts afresh.
const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** The raw body, at most MAX_BODY_BYTES, as JSON sent as application/json or text/plain (sendBeacon). */
async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  const type = (req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
  if (type !== "application/json" && type !== "text/plain") {
    throw new RequestError(415, "unsupported_media_type", "Send JSON as application/json or text/plain.");
  }
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > MAX_BODY_BYTES) throw new RequestError(413, "payload_too_large", `The body may be at most ${MAX_BODY_BYTES} bytes.`);
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on("data", (chunk: Buffer) => {
      if (tooLarge) return; // keep draining so the 413 can still be delivered
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        tooLarge = true;
        reject(new RequestError(413, "payload_too_large", `The body may be at most ${MAX_BODY_BYTES} bytes.`, { Connection: "close" }));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
  let text: string;
  try {
    text = UTF8.decode(raw);
  } catch {
    throw new RequestError(400, "invalid_json", "The body is not valid UTF-8.");
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new RequestError(400, "invalid_json", "The body is not valid JSON.");
  }
}

/** What a request whose body is not storable is told. */
export const NOT_STORABLE = "Strings must be well-formed Unicode without U+0000, and numbers finite.";

/**
 * Text PostgreSQL can take: no U+0000, which no text or jsonb value can hold, and no lone UTF-16
 * surrogate (JSON.parse makes one of the escape "\ud83d", as from a title cut in the middle of an
 * emoji). JSON.stringify writes a lone surrogate back as that escape, which jsonb refuses
 * (22P02), failing the whole call: with group commit, every request of the group. As a text
 * parameter the driver would silently turn it into U+FFFD instead.
 */
export function storableText(text: string): boolean {
  return text.isWellFormed() && !text.includes("\u0000");
}

/**
 * A value whose strings (keys too) are storableText, whose numbers are finite (JSON.parse turns
 * numbers too large for a double into Infinity) and which is not nested absurdly deep. An event
 * that is not is sent on as null, so the database rejects that event (invalid_event) and the
 * rest of the batch goes through.
 */
export function storable(value: unknown, depth = 0): boolean {
  if (depth > MAX_EVENT_DEPTH) return false;
  if (typeof value === "string") return storableText(value);
  if (typeof value === "number") return Number.isFinite(value);
  if (Array.isArray(value)) return value.every((item) => storable(item, depth + 1));
  if (value !== null && typeof value === "object") {
    return Object.entries(value).every(([key, item]) => storableText(key) && storable(item, depth + 1));
  }
  return true;
}

function envelope(body: unknown): { site: string; events: unknown[] } {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new RequestError(400, "invalid_envelope", "The body must be an object with site and events.");
  }
  const { site, events } = body as { site?: unknown; events?: unknown };
  if (typeof site !== "string" || site.length === 0 || site.length > 100 || !storableText(site)) {
    throw new RequestError(400, "invalid_envelope", "site must be the site's public key.");
  }
  if (!Array.isArray(events) || events.length === 0) {
    throw new RequestError(400, "invalid_envelope", "events must be a non-empty array.");
  }
  if (events.length > MAX_EVENTS) throw new RequestError(413, "payload_too_large", `A request may carry at most ${MAX_EVENTS} events.`);
  return { site, events: events.map((event) => (storable(event) ? event : null)) };
}

const DATABASE_ERRORS: Record<string, (detail?: string) => RequestError> = {
  OMUSK: () => new RequestError(403, "unknown_site", "No site has this key."),
  OMORG: () => new RequestError(403, "origin_not_allowed", "This origin may not send events for the site."),
  OM429: (detail) => new RequestError(429, "rate_limited", "Too many requests: slow down.", { "Retry-After": String(Math.max(1, Number(detail) || 60)) }),
  OMENV: () => new RequestError(400, "invalid_envelope", "The request is not shaped as expected."),
};

const UNAVAILABLE = { status: 500, code: "ingest_unavailable", message: "Events could not be stored; retry later." };

/** A database error the tracker should see as such (site, origin, rate limit), else a logged 500. */
function refusal(code: string | undefined, detail: string | undefined, message: string): RequestError {
  const known = code ? DATABASE_ERRORS[code] : undefined;
  if (known) return known(detail);
  logger.error({ err: message, code }, "ingest failed");
  return new RequestError(UNAVAILABLE.status, UNAVAILABLE.code, UNAVAILABLE.message);
}

/** The answer for anything a handler threw: its own RequestError, or a logged 500 that reveals nothing. */
function sendFailure(res: ServerResponse, error: unknown): void {
  if (error instanceof RequestError) return sendError(res, error.status, error.code, error.message, error.headers);
  logger.error({ err: (error as Error).message }, "ingest failed");
  sendError(res, UNAVAILABLE.status, UNAVAILABLE.code, UNAVAILABLE.message);
}

function corsHeaders(res: ServerResponse, origin: string): void {
  res.setHeader("Access-Control-Allow-Origin", origin);
  res.setHeader("Vary", "Origin");
}

/** POST /api/sync as a node request listener; clientIp says who sent the request (express's trust proxy rule). */
export function syncEndpoint(config: Config, authPool: pg.Pool, clientIp: (req: IncomingMessage) => string | undefined) {
  const coalescer = new IngestCoalescer(authPool, config.allowedOrigins, { concurrency: config.ingestConcurrency });

  async function sync(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const { site, events } = envelope(await readJsonBody(req));
      // A rejection (queue full, connection lost) reaches sendFailure: a logged 500, nothing stored.
      const outcome = await coalescer.submit({ site, events, origin: req.headers.origin ?? null, clientIp: clientIp(req) ?? null, userAgent: req.headers["user-agent"] ?? null });
      if ("code" in outcome) throw refusal(outcome.code, outcome.detail, outcome.message);
      corsHeaders(res, req.headers.origin!);
      writeJson(res, 200, outcome.result);
    } catch (error) {
      sendFailure(res, error);
    }
  }

  return (req: IncomingMessage, res: ServerResponse): void => void sync(req, res);
}

/** OPTIONS /api/sync and /api/consent, and POST /api/consent. */
export function ingestRouter(config: Config, authPool: pg.Pool): Router {
  const router = express.Router();

  // Named, so each pooled connection parses and plans the call once instead of per request.
  async function call(name: string, sql: string, params: unknown[]): Promise<unknown> {
    try {
      const { rows } = await authPool.query({ name, text: sql, values: params });
      return rows[0].result;
    } catch (error) {
      const { code, detail, message } = error as { code?: string; detail?: string; message: string };
      throw refusal(code, detail, message);
    }
  }

  const handle = (work: (req: Request, res: Response) => Promise<void>) =>
    async (req: Request, res: Response, _next: NextFunction) => {
      try {
        await work(req, res);
      } catch (error) {
        sendFailure(res, error);
      }
    };

  router.options(["/sync", "/consent"], handle(async (req, res) => {
    const origin = req.headers.origin;
    const { rows } = origin ? await authPool.query("select app_private.origin_known($1, $2) as known", [origin, config.allowedOrigins]) : { rows: [] };
    if (!rows[0]?.known) throw new RequestError(403, "origin_not_allowed", "This origin may not send events.");
    corsHeaders(res, origin!);
    res.setHeader("Access-Control-Allow-Methods", "POST");
    res.setHeader("Access-Control-Allow-Headers", "Content-Type");
    res.setHeader("Access-Control-Max-Age", "600");
    res.status(204).end();
  }));

  router.post("/consent", handle(async (req, res) => {
    const body = await readJsonBody(req);
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
      throw new RequestError(400, "invalid_envelope", "The body must be an object with site, visitor_id and consent.");
    }
    if (!storable(body)) {
      throw new RequestError(400, "invalid_envelope", NOT_STORABLE);
    }
    const { site, visitor_id: visitorId, consent } = body as { site?: unknown; visitor_id?: unknown; consent?: unknown };
    if (typeof site !== "string" || typeof visitorId !== "string" || consent === null || typeof consent !== "object" || Array.isArray(consent)) {
      throw new RequestError(400, "invalid_envelope", "The body must be an object with site, visitor_id and consent.");
    }
    const result = await call("record_consent",
      "select app_private.record_consent($1, $2, $3::jsonb, $4, $5, $6) as result",
      [site, visitorId, JSON.stringify(consent), req.headers.origin ?? null, req.ip ?? null, config.allowedOrigins]);
    corsHeaders(res, req.headers.origin!);
    res.status(200).json(result);
  }));

  return router;
}
