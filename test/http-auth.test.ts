/*
 * Authentication at the HTTP edge, through the real express app: what each kind of credential
 * (none, HS256 JWT, RS256 JWT via JWKS, API key) is allowed to see, and that every refusal is a
 * 401 with exactly {error, message} and nothing internal in it. Fixtures are committed, because
 * the service reads them on its own connections.
 */
import { createServer, Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { createApiKey, createSite, createUser, getRootPool } from "./helpers/db";
import { TEST_JWT_SECRET } from "./helpers/env";
import { readBody, startTestService, TestService, tokenFor } from "./helpers/http";

interface RawResponse {
  status: number;
  contentType: string | null;
  text: string;
  body: any;
}

const WHO_AM_I = "{ allSites { totalCount nodes { rowId } } currentUser { rowId } }";

/** POST /graphql with whatever Authorization header the test wants (or none). */
async function postGraphql(url: string, authorization: string | undefined, query = WHO_AM_I): Promise<RawResponse> {
  const response = await fetch(`${url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json", ...(authorization === undefined ? {} : { authorization }) },
    body: JSON.stringify({ query }),
  });
  const { text, body } = await readBody(response);
  return { status: response.status, contentType: response.headers.get("content-type"), text, body };
}

// Anything that would tell a caller how the server is built: stack frames, SQL, schema and
// library names.
const INTERNALS = /\n\s+at |stack|\bselect\b|\binsert\b|\bsql\b|app_(private|public|hidden)|pg_|jose|JWS|ERR_|Error:/i;

/** A refusal is 401 with exactly {error, message} as JSON, and the message reveals nothing. */
function expectRefused(response: RawResponse, code: string): void {
  expect({ status: response.status, error: response.body?.error }).toEqual({ status: 401, error: code });
  expect(response.contentType).toMatch(/^application\/json/);
  expect(Object.keys(response.body).sort()).toEqual(["error", "message"]);
  expect(typeof response.body.message).toBe("string");
  expect(response.body.message.length).toBeGreaterThan(0);
  expect(response.text).not.toMatch(INTERNALS);
}

type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];

function base64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

let service: TestService;
let ownerId: string;
let loneUserId: string;
let site: { id: string; publicKey: string };
let otherSite: { id: string; publicKey: string };

beforeAll(async () => {
  const client = await getRootPool().connect();
  try {
    ownerId = await createUser(client);
    loneUserId = await createUser(client);
    site = await createSite(client, ownerId);
    // A second site the owner is not a member of: "sees its sites" must mean only its own.
    otherSite = await createSite(client, await createUser(client));
  } finally {
    client.release();
  }
  service = await startTestService();
});

afterAll(async () => {
  await service?.stop();
});

describe("POST /graphql without credentials", () => {
  test("is served, and the anonymous caller sees an empty world", async () => {
    const { rows } = await getRootPool().query("select count(*)::int as n from app_public.sites");
    expect(rows[0].n).toBeGreaterThanOrEqual(2); // there is something to hide
    const response = await postGraphql(service.url, undefined);
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ data: { allSites: { totalCount: 0, nodes: [] }, currentUser: null } });
  });
});

describe("POST /graphql with an HS256 dashboard token", () => {
  test("a valid token is served and sees exactly its user's sites", async () => {
    const response = await postGraphql(service.url, `Bearer ${await tokenFor(ownerId)}`);
    expect(response.status).toBe(200);
    expect(response.body.errors).toBeUndefined();
    expect(response.body.data.allSites).toEqual({ totalCount: 1, nodes: [{ rowId: site.id }] });
    expect(response.body.data.currentUser).toEqual({ rowId: ownerId });
    expect(response.text).not.toContain(otherSite.id);
  });

  test("the scheme name is case-insensitive (RFC 7235)", async () => {
    const response = await postGraphql(service.url, `bearer ${await tokenFor(ownerId)}`);
    expect(response.status).toBe(200);
    expect(response.body.data.currentUser).toEqual({ rowId: ownerId });
  });

  test("a valid user without any membership sees an empty world, without error", async () => {
    const response = await postGraphql(service.url, `Bearer ${await tokenFor(loneUserId)}`);
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ data: { allSites: { totalCount: 0, nodes: [] }, currentUser: { rowId: loneUserId } } });
  });

  test("an expired token is 401 token_expired", async () => {
    // Signed with the right secret: only the expiry can be the reason for the refusal.
    const expired = await tokenFor(ownerId, -60);
    expectRefused(await postGraphql(service.url, `Bearer ${expired}`), "token_expired");
  });

  test("a token signed with another secret is 401 invalid_token", async () => {
    const forged = await new SignJWT({}).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setSubject(ownerId)
      .setIssuedAt().setExpirationTime("10m").sign(new TextEncoder().encode(`${TEST_JWT_SECRET}-but-not-quite`));
    expectRefused(await postGraphql(service.url, `Bearer ${forged}`), "invalid_token");
  });

  test("an unsigned `alg: none` token is 401 invalid_token", async () => {
    const now = Math.floor(Date.now() / 1000);
    const unsigned = `${base64url({ alg: "none", typ: "JWT" })}.${base64url({ sub: ownerId, iat: now, exp: now + 600 })}.`;
    expectRefused(await postGraphql(service.url, `Bearer ${unsigned}`), "invalid_token");
  });

  test("a malformed token is 401 invalid_token", async () => {
    expectRefused(await postGraphql(service.url, "Bearer not-a-jwt"), "invalid_token");
    expectRefused(await postGraphql(service.url, "Bearer a.b.c"), "invalid_token");
  });

  test("a token whose sub is not a UUID is 401 invalid_token", async () => {
    const token = await new SignJWT({}).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setSubject("admin")
      .setIssuedAt().setExpirationTime("10m").sign(new TextEncoder().encode(TEST_JWT_SECRET));
    expectRefused(await postGraphql(service.url, `Bearer ${token}`), "invalid_token");
    // Same token shape and secret with a UUID sub is accepted: the sub is what was refused.
    const good = await new SignJWT({}).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setSubject(ownerId)
      .setIssuedAt().setExpirationTime("10m").sign(new TextEncoder().encode(TEST_JWT_SECRET));
    expect((await postGraphql(service.url, `Bearer ${good}`)).status).toBe(200);
  });

  test("a scheme other than Bearer, or a Bearer header without a single credential, is 401 invalid_authorization", async () => {
    expectRefused(await postGraphql(service.url, `Basic ${Buffer.from("user:pass").toString("base64")}`), "invalid_authorization");
    expectRefused(await postGraphql(service.url, "Bearer"), "invalid_authorization");
    expectRefused(await postGraphql(service.url, `Bearer ${await tokenFor(ownerId)} extra`), "invalid_authorization");
    expectRefused(await postGraphql(service.url, await tokenFor(ownerId)), "invalid_authorization");
  });
});

describe("POST /graphql with a site API key", () => {
  test("a valid key is served, scoped to its site, and stamps last_used_at", async () => {
    const client = await getRootPool().connect();
    let key: { id: string; key: string };
    try {
      key = await createApiKey(client, site.id, "viewer");
    } finally {
      client.release();
    }
    const before = await getRootPool().query("select last_used_at from app_public.api_keys where id = $1", [key.id]);
    expect(before.rows[0].last_used_at).toBeNull();

    const response = await postGraphql(service.url, `Bearer ${key.key}`);
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ data: { allSites: { totalCount: 1, nodes: [{ rowId: site.id }] }, currentUser: null } });

    const after = await getRootPool().query("select last_used_at, now() - last_used_at < interval '1 minute' as recent from app_public.api_keys where id = $1", [key.id]);
    expect(after.rows[0].last_used_at).not.toBeNull();
    expect(after.rows[0].recent).toBe(true);
  });

  test("an unknown key is 401 invalid_api_key", async () => {
    const unknown = `om_${Buffer.alloc(24, 9).toString("base64url")}`; // well-formed, never issued
    expectRefused(await postGraphql(service.url, `Bearer ${unknown}`), "invalid_api_key");
    expectRefused(await postGraphql(service.url, "Bearer om_short"), "invalid_api_key");
  });

  test("a revoked key is 401 invalid_api_key", async () => {
    const client = await getRootPool().connect();
    let key: { id: string; key: string };
    try {
      key = await createApiKey(client, site.id, "editor");
    } finally {
      client.release();
    }
    // It works before revocation, so the later 401 can only come from the revocation.
    expect((await postGraphql(service.url, `Bearer ${key.key}`)).status).toBe(200);

    const revoke = await service.graphql(
      "mutation($id: UUID!) { revokeApiKey(input: {apiKeyId: $id}) { result { rowId revokedAt } } }", { id: key.id }, await tokenFor(ownerId));
    expect(revoke.status).toBe(200);
    expect(revoke.body.errors).toBeUndefined();
    expect(revoke.body.data.revokeApiKey.result.rowId).toBe(key.id);
    expect(revoke.body.data.revokeApiKey.result.revokedAt).not.toBeNull();

    expectRefused(await postGraphql(service.url, `Bearer ${key.key}`), "invalid_api_key");
  });
});

describe("POST /graphql with RS256 tokens from a JWKS", () => {
  const ISSUER = "https://idp.opsmantik.test/";
  const AUDIENCE = "opsmantik-dashboard";
  const KID = "test-key-1";
  let jwksServer: Server;
  let rsService: TestService;
  let privateKey: PrivateKey;
  let strangerKey: PrivateKey;

  const rs256 = (key: PrivateKey, { iss = ISSUER, aud = AUDIENCE, sub = ownerId, exp = "10m" as string | number } = {}) =>
    new SignJWT({}).setProtectedHeader({ alg: "RS256", kid: KID, typ: "JWT" }).setSubject(sub).setIssuer(iss).setAudience(aud)
      .setIssuedAt().setExpirationTime(exp).sign(key);

  beforeAll(async () => {
    const pair = await generateKeyPair("RS256");
    privateKey = pair.privateKey;
    strangerKey = (await generateKeyPair("RS256")).privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: KID, alg: "RS256", use: "sig" };
    jwksServer = createServer((req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((resolve) => jwksServer.listen(0, "127.0.0.1", resolve));
    const { port } = jwksServer.address() as AddressInfo;

    // readConfig() reads process.env when the service starts; put everything back right after.
    const saved = { JWKS_URL: process.env.JWKS_URL, JWT_ISSUER: process.env.JWT_ISSUER, JWT_AUDIENCE: process.env.JWT_AUDIENCE, JWT_SECRET: process.env.JWT_SECRET };
    try {
      process.env.JWKS_URL = `http://127.0.0.1:${port}/.well-known/jwks.json`;
      process.env.JWT_ISSUER = ISSUER;
      process.env.JWT_AUDIENCE = AUDIENCE;
      delete process.env.JWT_SECRET;
      rsService = await startTestService();
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });

  afterAll(async () => {
    await rsService?.stop();
    await new Promise((resolve) => jwksServer?.close(resolve));
  });

  test("a token signed by the JWKS key, with the right issuer and audience, is served", async () => {
    const response = await postGraphql(rsService.url, `Bearer ${await rs256(privateKey)}`);
    expect(response.status).toBe(200);
    expect(response.body.errors).toBeUndefined();
    expect(response.body.data.allSites).toEqual({ totalCount: 1, nodes: [{ rowId: site.id }] });
    expect(response.body.data.currentUser).toEqual({ rowId: ownerId });
  });

  test("a wrong issuer is 401 invalid_token", async () => {
    expectRefused(await postGraphql(rsService.url, `Bearer ${await rs256(privateKey, { iss: "https://evil.example/" })}`), "invalid_token");
  });

  test("a wrong audience is 401 invalid_token", async () => {
    expectRefused(await postGraphql(rsService.url, `Bearer ${await rs256(privateKey, { aud: "someone-else" })}`), "invalid_token");
  });

  test("an expired RS256 token is 401 token_expired", async () => {
    const past = Math.floor(Date.now() / 1000) - 60;
    expectRefused(await postGraphql(rsService.url, `Bearer ${await rs256(privateKey, { exp: past })}`), "token_expired");
  });

  test("a token signed by a key not in the JWKS is 401 invalid_token", async () => {
    expectRefused(await postGraphql(rsService.url, `Bearer ${await rs256(strangerKey)}`), "invalid_token");
  });

  test("an HS256 token is 401 invalid_token once the server trusts only the JWKS", async () => {
    // Correct issuer, audience and the (former) shared secret: only the algorithm is wrong.
    const hs = await new SignJWT({}).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setSubject(ownerId).setIssuer(ISSUER)
      .setAudience(AUDIENCE).setIssuedAt().setExpirationTime("10m").sign(new TextEncoder().encode(TEST_JWT_SECRET));
    expectRefused(await postGraphql(rsService.url, `Bearer ${hs}`), "invalid_token");
  });

  test("API keys still work on the JWKS-configured server", async () => {
    const client = await getRootPool().connect();
    let key: { id: string; key: string };
    try {
      key = await createApiKey(client, site.id, "viewer");
    } finally {
      client.release();
    }
    const response = await postGraphql(rsService.url, `Bearer ${key.key}`);
    expect(response.status).toBe(200);
    expect(response.body.data.allSites.nodes).toEqual([{ rowId: site.id }]);
  });
});

describe("other paths", () => {
  test("GET /api/health answers {status, db, migrations, worker} with the database reachable", async () => {
    const response = await fetch(`${service.url}/api/health`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    const body = (await response.json()) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(["db", "migrations", "status", "worker"]);
    expect(body.db).toBe("ok");
    expect(body.migrations).toBe("current"); // globalSetup migrated the test database
    expect(["ok", "stale", "unknown"]).toContain(body.worker);
    expect(["ok", "degraded"]).toContain(body.status);
    // status is "ok" exactly when migrations are current and the worker is beating.
    expect(body.status).toBe(body.worker === "ok" ? "ok" : "degraded");
  });

  test.each([["GET", "/nowhere"], ["GET", "/api/unknown"], ["POST", "/api/unknown"]])("%s %s is 404 not_found as JSON", async (method, path) => {
    const response = await fetch(`${service.url}${path}`, { method, headers: { "content-type": "application/json" }, body: method === "POST" ? "{}" : undefined });
    expect(response.status).toBe(404);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    const body = (await response.json()) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(["error", "message"]);
    expect(body.error).toBe("not_found");
  });
});
