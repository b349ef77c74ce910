/*
 * Rate limits count per client IP. Behind a load balancer every request comes from the
 * balancer's address, so TRUST_PROXY says whose X-Forwarded-For to believe; by default only a
 * proxy on loopback. The test runs on loopback, so forwarded addresses must count separately.
 */
import { randomUUID } from "node:crypto";
import { ConfigError, readConfig } from "../src/config";
import { createUser, getRootPool, unique } from "./helpers/db";
import { startTestService, TestService } from "./helpers/http";

let service: TestService;
let publicKey: string;

beforeAll(async () => {
  const client = await getRootPool().connect();
  try {
    const owner = await createUser(client);
    const { rows } = await client.query(
      "select public_key from app_private.create_site($1, $2, 'proxy.example', rate_limit_per_minute => 2, allowed_origins => '{https://proxy.example}')",
      [owner, unique("proxy")]);
    publicKey = rows[0].public_key;
  } finally {
    client.release();
  }
  service = await startTestService();
});

afterAll(async () => {
  await service?.stop();
});

function send(forwardedFor: string): Promise<Response> {
  return fetch(`${service.url}/api/sync`, {
    method: "POST",
    headers: { "content-type": "application/json", origin: "https://proxy.example", "x-forwarded-for": forwardedFor },
    body: JSON.stringify({ site: publicKey, events: [{ id: randomUUID(), type: "click", ts: new Date().toISOString(), visitor_id: "v1" }] }),
  });
}

test("behind a trusted proxy each forwarded client has its own limit", async () => {
  // Stay inside one minute window: the limit counts per minute.
  const secondsLeft = 60 - new Date().getUTCSeconds();
  if (secondsLeft < 5) await new Promise((r) => setTimeout(r, secondsLeft * 1000 + 200));
  expect((await send("203.0.113.1")).status).toBe(200);
  expect((await send("203.0.113.1")).status).toBe(200);
  expect((await send("203.0.113.1")).status).toBe(429);
  // Another client behind the same proxy is not held back by the first one.
  expect((await send("203.0.113.2")).status).toBe(200);
});

test.each([["nonsense!"], ["10.0.0.0/8,<script>"], ["-1"]])("TRUST_PROXY=%s stops start-up with a ConfigError naming it", (value) => {
  expect(() => readConfig({ ...process.env, TRUST_PROXY: value })).toThrow(ConfigError);
  expect(() => readConfig({ ...process.env, TRUST_PROXY: value })).toThrow(/TRUST_PROXY/);
});

test.each([["true", true], ["false", false], ["2", 2], ["loopback, 10.0.0.0/8", "loopback, 10.0.0.0/8"]])("TRUST_PROXY=%s is accepted", (value, expected) => {
  expect(readConfig({ ...process.env, TRUST_PROXY: value }).trustProxy).toEqual(expected);
});
