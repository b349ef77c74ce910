/*
 * GET /api/metrics through the real express app: closed without METRICS_TOKEN, only the exact
 * bearer token opens it, and what it reports (Prometheus text format) follows the database:
 * a queued conversion and a destination needing re-authorisation show up in their gauges.
 */
import { exposition } from "../src/http/metrics";
import { createSite, createUser, getRootPool, unique } from "./helpers/db";
import { readBody, startTestService, TestService } from "./helpers/http";

const TOKEN = "metrics-test-token-5f1c";

let open: TestService;
let closed: TestService;

beforeAll(async () => {
  [open, closed] = await Promise.all([
    startTestService({ env: { METRICS_TOKEN: TOKEN } }),
    startTestService({ env: { METRICS_TOKEN: "" } }),
  ]);
});

afterAll(async () => {
  await Promise.all([open?.stop(), closed?.stop()]);
});

function scrape(service: TestService, authorization?: string): Promise<Response> {
  return fetch(`${service.url}/api/metrics`, { headers: authorization === undefined ? {} : { authorization } });
}

/** The samples of an exposition: `name{labels}` → value, and each metric's TYPE. */
function parse(text: string): { values: Map<string, number>; types: Map<string, string> } {
  const values = new Map<string, number>();
  const types = new Map<string, string>();
  for (const line of text.trimEnd().split("\n")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1], type[2]);
    else if (!line.startsWith("#")) {
      const [, series, value] = /^(\S+) (\S+)$/.exec(line)!;
      values.set(series, Number(value));
    }
  }
  return { values, types };
}

async function samples(): Promise<Map<string, number>> {
  const response = await scrape(open, `Bearer ${TOKEN}`);
  expect(response.status).toBe(200);
  return parse(await response.text()).values;
}

test("closed when METRICS_TOKEN is unset: 404 with a JSON error that says how to open it", async () => {
  const response = await scrape(closed, `Bearer ${TOKEN}`);
  const { body } = await readBody(response);
  expect(response.status).toBe(404);
  expect(body).toEqual({ error: "metrics_closed", message: expect.stringContaining("METRICS_TOKEN") });
});

test.each([
  ["no Authorization header", undefined],
  ["a wrong token", "Bearer not-the-token"],
  ["the token with a character more", `Bearer ${TOKEN}x`],
  ["the token without the Bearer scheme", TOKEN],
  ["the token as HTTP Basic", `Basic ${Buffer.from(`metrics:${TOKEN}`).toString("base64")}`],
])("%s: 401 with a Bearer challenge and nothing of the metrics", async (_label, authorization) => {
  const response = await scrape(open, authorization);
  const { text, body } = await readBody(response);
  expect(response.status).toBe(401);
  expect(response.headers.get("www-authenticate")).toBe('Bearer realm="metrics"');
  expect(body).toEqual({ error: "unauthorized", message: expect.any(String) });
  expect(text).not.toContain("opsmantik_");
});

test("the exact token: Prometheus text format, every metric with its HELP and TYPE, no caching", async () => {
  const response = await scrape(open, `Bearer ${TOKEN}`);
  const text = await response.text();
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  expect(response.headers.get("cache-control")).toBe("no-store");
  const { values, types } = parse(text);
  for (const [name, kind] of [
    ["opsmantik_jobs", "gauge"], ["opsmantik_jobs_oldest_due_seconds", "gauge"], ["opsmantik_offline_conversions", "gauge"],
    ["opsmantik_offline_conversions_oldest_due_seconds", "gauge"], ["opsmantik_destinations", "gauge"],
    ["opsmantik_erasure_requests", "gauge"], ["opsmantik_ledger_rows_written_total", "counter"],
    ["opsmantik_events_written_total", "counter"], ["opsmantik_database_connections", "gauge"],
  ]) {
    expect(types.get(name)).toBe(kind);
    expect(text).toMatch(new RegExp(`^# HELP ${name} \\S`, "m"));
  }
  for (const state of ["queued", "running", "failed"]) expect(values.get(`opsmantik_jobs{state="${state}"}`)).toEqual(expect.any(Number));
  for (const state of ["due", "waiting", "sent"]) expect(values.get(`opsmantik_offline_conversions{state="${state}"}`)).toEqual(expect.any(Number));
  // This very scrape is a connection of the database, and it is active.
  expect(values.get('opsmantik_database_connections{state="active"}')).toBeGreaterThanOrEqual(1);
});

test("the gauges follow the database: a confirmed sale is a due conversion and a queued job; a refused destination needs re-authorisation", async () => {
  const before = await samples();
  const root = getRootPool();
  const client = await root.connect();
  try {
    const site = await createSite(client, await createUser(client));
    const { rows: [destination] } = await client.query(
      "select id from app_public.create_destination($1, 'google_ads', '123-456-7890', '987654321', null)", [site.id]);
    await client.query("select app_private.mark_destination_needs_reauth($1, 'OAUTH_TOKEN_REVOKED')", [destination.id]);
    await client.query(
      `select app_public.confirm_sale_and_enqueue(site_id => $1, external_id => $2, amount => 100, currency => 'TRY',
                                                  occurred_at => now() - interval '1 hour', gclid => 'Cj0KCQ-metrics')`,
      [site.id, unique("order")]);
  } finally {
    client.release();
  }
  const after = await samples();
  const delta = (series: string) => (after.get(series) ?? 0) - (before.get(series) ?? 0);
  expect(delta('opsmantik_offline_conversions{state="due"}')).toBe(1);
  expect(delta('opsmantik_destinations{status="needs_reauth"}')).toBe(1);
  expect(delta('opsmantik_jobs{state="queued"}')).toBeGreaterThanOrEqual(1);
  expect(after.get("opsmantik_offline_conversions_oldest_due_seconds")).toBeGreaterThanOrEqual(0);
});

test("exposition: label values escaped, samples grouped under one HELP and TYPE, a sample without a value left out", () => {
  expect(exposition([
    { name: "m", help: "Help with a \\ and\na newline.", kind: "gauge", labels: { k: 'a "quoted" \\ value\nnext' }, value: 1 },
    { name: "n", help: "Not known yet.", kind: "gauge", labels: {}, value: null },
    { name: "m", help: "Help with a \\ and\na newline.", kind: "gauge", labels: { k: "b" }, value: 2.5 },
  ])).toBe([
    "# HELP m Help with a \\\\ and\\na newline.",
    "# TYPE m gauge",
    'm{k="a \\"quoted\\" \\\\ value\\nnext"} 1',
    'm{k="b"} 2.5',
    "# HELP n Not known yet.",
    "# TYPE n gauge",
    "",
  ].join("\n"));
});
