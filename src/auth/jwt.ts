/*
 * Dashboard tokens. HS256 with JWT_SECRET, or RS256 keys fetched from JWKS_URL with issuer and
 * audience checked. The algorithm list is fixed per mode, so `alg: none` or an HS256 token
 * signed with a public key is refused before any key is consulted.
 */
import { createRemoteJWKSet, errors, jwtVerify, JWTPayload, SignJWT } from "jose";
import { Config } from "../config";
import { isUuid } from "../uuid";

export class TokenError extends Error {
  constructor(public readonly code: "token_expired" | "invalid_token", message: string) {
    super(message);
  }
}


export type TokenVerifier = (token: string) => Promise<{ userId: string }>;

export function makeTokenVerifier(config: Config): TokenVerifier {
  const { secret, jwksUrl, issuer, audience } = config.jwt;
  const jwks = jwksUrl ? createRemoteJWKSet(jwksUrl, { cooldownDuration: 30_000, timeoutDuration: 5_000 }) : undefined;
  return async (token) => {
    let payload: JWTPayload;
    try {
      if (jwks) {
        ({ payload } = await jwtVerify(token, jwks, { algorithms: ["RS256"], issuer, audience }));
      } else if (secret) {
        ({ payload } = await jwtVerify(token, secret, { algorithms: ["HS256"], issuer, audience }));
      } else {
        throw new TokenError("invalid_token", "Dashboard tokens are not accepted by this server.");
      }
    } catch (error) {
      if (error instanceof TokenError) throw error;
      if (error instanceof errors.JWTExpired) throw new TokenError("token_expired", "The token has expired.");
      throw new TokenError("invalid_token", "The token is not valid.");
    }
    if (typeof payload.sub !== "string" || !isUuid(payload.sub)) {
      throw new TokenError("invalid_token", "The token does not name a user.");
    }
    return { userId: payload.sub.toLowerCase() };
  };
}

/** Parses "90s", "30m", "1h", "7d" or plain seconds. */
export function parseTtl(text: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!match) throw new Error(`"${text}" is not a duration like 30m, 1h or 7d`);
  const seconds = Number(match[1]) * { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[match[2] as "" | "s" | "m" | "h" | "d"];
  if (seconds < 1 || seconds > 366 * 86400) throw new Error("the duration must be between 1 second and 366 days");
  return seconds;
}

export async function signUserToken(config: Config, userId: string, ttlSeconds: number): Promise<string> {
  if (!config.jwt.secret) throw new Error("signing dashboard tokens needs JWT_SECRET (with JWKS_URL your identity provider issues them)");
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({}).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setSubject(userId).setIssuedAt(now)
    .setExpirationTime(now + ttlSeconds);
  if (config.jwt.issuer) jwt = jwt.setIssuer(config.jwt.issuer);
  if (config.jwt.audience) jwt = jwt.setAudience(config.jwt.audience);
  return jwt.sign(config.jwt.secret);
}
