/*
 * The express app: a thin shell around the database. It authenticates, hands GraphQL to
 * PostGraphile, answers health checks, and turns every failure into our JSON error shape.
 * Routes of later features mount here too. The server's request listener sits in front of it:
 * it sets what every response carries, and sends the tracker's POST /api/sync straight to its
 * handler.
 */
import type { IncomingMessage, RequestListener, ServerResponse } from "node:http";
import express, { NextFunction, Request, Response } from "express";
import type pg from "pg";
import proxyaddr from "proxy-addr";
import type { TokenVerifier } from "../auth/jwt";
import type { Config } from "../config";
import { logger } from "../logger";
import { authenticate } from "./authenticate";
import { sendError } from "./errors";
import { callEventRouter } from "./call-events";
import { disputeExportHandler } from "./dispute-export";
import { healthHandler } from "./health";
import { ingestRouter, syncEndpoint } from "./ingest";
import { metricsHandler } from "./metrics";
import { ociExportHandler } from "./oci-export";
import { salesRouter } from "./sales";

export interface AppDeps {
  config: Config;
  pools: { owner: pg.Pool; auth: pg.Pool };
  verifyToken: TokenVerifier;
}

export function makeApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable("x-powered-by");
  // Our JSON answers are per request and never revalidated: hashing each body for an ETag is waste.
  app.disable("etag");
  app.set("trust proxy", deps.config.trustProxy);
  app.get("/api/health", healthHandler(deps.pools.owner));
  app.get("/api/metrics", metricsHandler(deps.config.metricsToken, deps.pools.owner));
  app.use("/api", ingestRouter(deps.config, deps.pools.auth));
  app.use("/api", callEventRouter(deps.pools.auth));
  app.use("/api/sales", authenticate(deps.verifyToken, deps.pools.auth));
  app.use("/api", salesRouter(deps.config, deps.pools));
  app.get("/api/oci/export.csv", (req, res, next) => (/^Basic /i.test(req.headers.authorization ?? "") ? next() : authenticate(deps.verifyToken, deps.pools.auth)(req, res, next)),
    ociExportHandler(deps.pools.auth));
  app.use("/graphql", authenticate(deps.verifyToken, deps.pools.auth));
  app.get("/api/billing/dispute-export.csv", authenticate(deps.verifyToken, deps.pools.auth), disputeExportHandler(deps.config, deps.pools));
  return app;
}

// The path express would route to POST /api/sync: any case, an optional trailing slash, any query.
const SYNC_PATH = /^\/api\/sync\/?(?:\?|$)/i;

/** The server's request listener: every response's common headers and log line, then the route. */
export function makeRequestListener(app: express.Express, deps: AppDeps): RequestListener {
  // req.ip as express works it out: the TRUST_PROXY rule decides whose X-Forwarded-For to believe.
  const trust = app.get("trust proxy fn") as Parameters<typeof proxyaddr>[1];
  const sync = syncEndpoint(deps.config, deps.pools.auth, (req) => proxyaddr(req, trust));
  const logRequests = logger.isLevelEnabled("info");
  return (req: IncomingMessage, res: ServerResponse) => {
    res.setHeader("X-Content-Type-Options", "nosniff");
    if (logRequests) logWhenFinished(req, res);
    if (req.method === "POST" && SYNC_PATH.test(req.url ?? "")) sync(req, res);
    else void app(req, res);
  };
}

function logWhenFinished(req: IncomingMessage, res: ServerResponse): void {
  const started = process.hrtime.bigint();
  // Method, path and status only: query strings and headers may carry secrets. Read now: express
  // rewrites req.url while it routes.
  const path = (req.url ?? "").split("?")[0];
  res.on("finish", () => {
    logger.info({ method: req.method, path, status: res.statusCode, ms: Number(process.hrtime.bigint() - started) / 1e6 }, "request");
  });
}

/** Registered after PostGraphile has mounted, so they only catch what nothing else handled. */
export function addFallbackHandlers(app: express.Express): void {
  app.use((_req: Request, res: Response) => sendError(res, 404, "not_found", "There is nothing at this address."));
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  app.use((error: Error & { status?: number; type?: string }, _req: Request, res: Response, _next: NextFunction) => {
    if (error.type === "entity.parse.failed") return sendError(res, 400, "invalid_json", "The body is not valid JSON.");
    if (error.type === "entity.too.large") return sendError(res, 413, "payload_too_large", "The body is too large.");
    logger.error({ err: error.message }, "request failed");
    sendError(res, 500, "internal", "Something went wrong on our side.");
  });
}
