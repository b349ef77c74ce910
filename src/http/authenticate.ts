/*
 * Resolves the Authorization header before any handler runs. No header: an anonymous request,
 * which RLS shows an empty world. A header that is present but expired, malformed, wrongly
 * signed or revoked: 401 with a JSON error, and nothing runs.
 */
import type { NextFunction, Request, Response } from "express";
import type pg from "pg";
import { TokenError, TokenVerifier } from "../auth/jwt";
import { sendError } from "./errors";

const API_KEY = /^om_[A-Za-z0-9_-]{32}$/;

export function authenticate(verifyToken: TokenVerifier, authPool: pg.Pool) {
  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    const header = req.headers.authorization;
    if (header === undefined) {
      req.auth = {};
      return next();
    }
    const match = /^Bearer ([^\s]+)$/i.exec(header.trim());
    if (!match) {
      return sendError(res, 401, "invalid_authorization", "Send credentials as `Authorization: Bearer <token or API key>`.",
        { "WWW-Authenticate": 'Bearer realm="opsmantik"' });
    }
    const credential = match[1];
    try {
      if (credential.startsWith("om_")) {
        if (!API_KEY.test(credential)) return sendError(res, 401, "invalid_api_key", "The API key is not valid.");
        const { rows } = await authPool.query("select api_key_id, site_id, role from app_private.authenticate_api_key($1)", [credential]);
        if (rows.length === 0) return sendError(res, 401, "invalid_api_key", "The API key is not valid or has been revoked.");
        req.auth = { apiKeyId: rows[0].api_key_id, siteId: rows[0].site_id, role: rows[0].role };
      } else {
        const { userId } = await verifyToken(credential);
        req.auth = { userId };
      }
      next();
    } catch (error) {
      if (error instanceof TokenError) {
        return sendError(res, 401, error.code, error.message, { "WWW-Authenticate": `Bearer realm="opsmantik", error="invalid_token"` });
      }
      next(error);
    }
  };
}
