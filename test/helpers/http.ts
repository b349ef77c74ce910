/*
 * The real service for HTTP tests: express + PostGraphile on an ephemeral loopback port,
 * talking to the test database through the authenticator role, like production.
 */
import { signUserToken } from "../../src/auth/jwt";
import { readConfig } from "../../src/config";
import { flushDenials } from "../../src/db/denials";
import { Service, startService } from "../../src/server";

export interface TestService {
  url: string;
  service: Service;
  stop(): Promise<void>;
  /** POST /graphql; `auth` is a JWT or API key sent as a Bearer token. */
  graphql(query: string, variables?: Record<string, unknown>, auth?: string): Promise<{ status: number; body: any }>;
}

export async function startTestService({ worker = false } = {}): Promise<TestService> {
  const service = await startService(readConfig(), { http: true, worker });
  const url = service.url!;
  return {
    url,
    service,
    stop: () => service.stop(),
    async graphql(query, variables, auth) {
      const response = await fetch(`${url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json", ...(auth ? { authorization: `Bearer ${auth}` } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      const text = await response.text();
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
      return { status: response.status, body };
    },
  };
}

export function tokenFor(userId: string, ttlSeconds = 600): Promise<string> {
  return signUserToken(readConfig(), userId, ttlSeconds);
}

export { flushDenials };
