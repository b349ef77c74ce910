/*
 * OAuth 2.0 access tokens from a destination's refresh token (RFC 6749 §6), cached until a
 * minute before they expire. A revoked or invalid grant is a ReauthRequired: the destination
 * must be authorised again, retrying cannot help. Tokens and secrets never reach logs or errors.
 */
import { createHash } from "node:crypto";
import type { GoogleSettings } from "./types";

export class ReauthRequired extends Error {
  constructor(readonly code: string) {
    super(`Google refused the destination's authorisation (${code}); it must be authorised again.`);
    this.name = "ReauthRequired";
  }
}

/** The token endpoint could not be reached or failed: a transient condition. */
export class TokenEndpointUnavailable extends Error {
  constructor(readonly code: string) {
    super(`Google's token endpoint is unavailable (${code}).`);
    this.name = "TokenEndpointUnavailable";
  }
}

const REFRESH_MARGIN_MS = 60_000;
const REQUEST_TIMEOUT_MS = 15_000;

export class AccessTokens {
  // Keyed by a hash so the refresh token itself is not kept as a map key.
  private readonly cache = new Map<string, { token: string; expiresAt: number }>();

  constructor(private readonly settings: Pick<GoogleSettings, "clientId" | "clientSecret" | "oauthTokenUrl">) {}

  async get(refreshToken: string): Promise<string> {
    const key = createHash("sha256").update(refreshToken).digest("base64");
    const cached = this.cache.get(key);
    if (cached && cached.expiresAt - REFRESH_MARGIN_MS > Date.now()) return cached.token;

    let response: Response;
    try {
      response = await fetch(this.settings.oauthTokenUrl, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({
          grant_type: "refresh_token",
          refresh_token: refreshToken,
          client_id: this.settings.clientId ?? "",
          client_secret: this.settings.clientSecret ?? "",
        }),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch {
      throw new TokenEndpointUnavailable("TOKEN_ENDPOINT_UNREACHABLE");
    }
    const body = (await response.json().catch(() => ({}))) as { access_token?: unknown; expires_in?: unknown; error?: unknown };
    if (response.ok && typeof body.access_token === "string") {
      const lifetime = typeof body.expires_in === "number" ? body.expires_in * 1000 : 3_600_000;
      this.cache.set(key, { token: body.access_token, expiresAt: Date.now() + lifetime });
      return body.access_token;
    }
    // invalid_grant: revoked, expired or wrong refresh token; invalid_client / unauthorized_client:
    // our client credentials do not match the grant. Both need a person, not a retry.
    if (response.status === 400 || response.status === 401) {
      this.cache.delete(key);
      throw new ReauthRequired(typeof body.error === "string" ? body.error.toUpperCase() : `HTTP_${response.status}`);
    }
    throw new TokenEndpointUnavailable(`HTTP_${response.status}`);
  }

  /** Forget a token Google has just refused (UNAUTHENTICATED), so the next call refreshes it. */
  forget(refreshToken: string): void {
    this.cache.delete(createHash("sha256").update(refreshToken).digest("base64"));
  }
}
