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

/** `env` overrides settings for this service only (e.g. INGEST_CONCURRENCY). */
export async function startTestService({ worker = false, env = {} }: { worker?: boolean; env?: Record<string, string> } = {}): Promise<TestService> {
  const service = await startService(readConfig({ ...process.env, ...env }), { http: true, worker });
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
      const { body } = await readBody(response);
      return { status: response.status, body };
    },
  };
}

/** A response's text, and its JSON when it is JSON (the text otherwise). */
export async function readBody(response: Response): Promise<{ text: string; body: any }> {
  const text = await response.text();
  try {
    return { text, body: JSON.parse(text) };
  } catch {
    return { text, body: text };
  }
}

export function tokenFor(userId: string, ttlSeconds = 600): Promise<string> {
  return signUserToken(readConfig(), userId, ttlSeconds);
}

export { flushDenials };
