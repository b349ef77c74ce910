/*
 * A loopback stand-in for Google's OAuth token endpoint: exchanges known refresh tokens for
 * access tokens (grant_type=refresh_token) and answers 400 invalid_grant for revoked or
 * unknown ones, as Google does. Tests read `accessTokenFor` to check what the rails send.
 */
import { randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface OAuthFake {
  url: string;
  /** Registers a refresh token; returns the access token it will be exchanged for. */
  grant(refreshToken: string): string;
  revoke(refreshToken: string): void;
  /** Every access token ever issued, still valid (a fake Google API checks against this). */
  isValidAccessToken(token: string): boolean;
  requests: number;
  close(): Promise<void>;
}

export async function startOAuthFake(): Promise<OAuthFake> {
  const grants = new Map<string, string>();
  const valid = new Set<string>();
  const fake = {
    url: "",
    requests: 0,
    grant(refreshToken: string) {
      const access = `ya29.fake-${randomBytes(12).toString("hex")}`;
      grants.set(refreshToken, access);
      valid.add(access);
      return access;
    },
    revoke(refreshToken: string) {
      const access = grants.get(refreshToken);
      if (access) valid.delete(access);
      grants.delete(refreshToken);
    },
    isValidAccessToken: (token: string) => valid.has(token),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (body += chunk));
    req.on("end", () => {
      fake.requests++;
      const form = new URLSearchParams(body);
      const access = form.get("grant_type") === "refresh_token" ? grants.get(form.get("refresh_token") ?? "") : undefined;
      res.setHeader("content-type", "application/json");
      if (req.method !== "POST" || !access) {
        res.statusCode = 400;
        res.end(JSON.stringify({ error: "invalid_grant", error_description: "Token has been expired or revoked." }));
        return;
      }
      res.end(JSON.stringify({ access_token: access, expires_in: 3599, token_type: "Bearer", scope: "https://www.googleapis.com/auth/adwords" }));
    });
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`;
  return fake;
}
