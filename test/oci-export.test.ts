/*
 * GET /api/oci/export.csv through the real app: Google's scheduled-import CSV (time zone line,
 * header, one row per gclid conversion with consent columns), HTTP Basic with a credential
 * issued by the real CLI, constant refusals for wrong or missing credentials, editor+ API
 * keys, exported rows marked sent and kept in later files, nothing for a site whose
 * conversions go through an API destination.
 */
import { createUser, getRootPool, unique } from "./helpers/db";
import { runCli } from "./helpers/cli";
import { readBody, startTestService, TestService } from "./helpers/http";
import { createTrackedSite, ingest, pageview, sessionOf } from "./helpers/revenue";

let service: TestService;
let siteId: string;
let credential: { username: string; password: string };

const basic = (username: string, password: string) => `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
const get = (auth: string | undefined, query = "") =>
  fetch(`${service.url}/api/oci/export.csv${query}`, { headers: auth ? { authorization: auth } : {} });

async function apiKey(role: string): Promise<string> {
  const { rows } = await getRootPool().query("select key from app_private.issue_api_key($1, $2, 'test', null)", [siteId, role]);
  return rows[0].key;
}

beforeAll(async () => {
  const pool = getRootPool();
  const owner = await createUser(pool as never);
  const { rows } = await pool.query(
    "select id from app_private.create_site($1, $2, 'shop.example', consent_mode => 'implied', timezone => 'Europe/Istanbul', currency => 'TRY')",
    [owner, unique("Csv")]);
  siteId = rows[0].id;
  await pool.query("select app_public.confirm_sale_and_enqueue($1, 'CRM-1', 1250.00, 'TRY', now() - interval '2 hours', gclid => 'gclid-one')", [siteId]);
  await pool.query(`select app_public.confirm_sale_and_enqueue($1, 'CRM-2', 99.90, 'EUR', now() - interval '1 hour', gclid => 'gclid-two',
                      consent => '{"ad_user_data": "denied", "ad_personalization": "denied"}')`, [siteId]);
  // Not in the file: no gclid (a gbraid-only or unattributed sale cannot be imported by click id).
  await pool.query("select app_public.confirm_sale_and_enqueue($1, 'CRM-3', 10, 'TRY', now() - interval '1 hour')", [siteId]);
  const created = await runCli(["export-credential", "create", "--site", siteId, "--json"]);
  expect(created.code).toBe(0);
  credential = JSON.parse(created.stdout);
  service = await startTestService();
});

afterAll(async () => {
  await service?.stop();
});

test("the CSV is Google's scheduled-import format, in the site's time zone", async () => {
  const response = await get(basic(credential.username, credential.password), "?conversion_name=Sale%2C%20won");
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toBe("text/csv; charset=utf-8");
  const lines = (await response.text()).trimEnd().split("\n");
  expect(lines[0]).toBe("Parameters:TimeZone=Europe/Istanbul");
  expect(lines[1]).toBe("Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency,Ad User Data,Ad Personalization");
  expect(lines).toHaveLength(4);
  expect(lines[2]).toMatch(/^gclid-one,"Sale, won",\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},1250\.00,TRY,GRANTED,GRANTED$/);
  expect(lines[3]).toMatch(/^gclid-two,"Sale, won",[^,]+,99\.90,EUR,DENIED,DENIED$/);
  // The time is the site's local time (UTC+3).
  const { rows: [row] } = await getRootPool().query(
    "select to_char(conversion_at at time zone 'Europe/Istanbul', 'YYYY-MM-DD HH24:MI:SS') as local from app_public.offline_conversion_queue where site_id = $1 and order_id = 'CRM-1'", [siteId]);
  expect(lines[2].split(",")[3]).toBe(row.local);
});

test("a sale whose clock is behind its click goes a second after the click, as on the API rails (never before it)", async () => {
  const pool = getRootPool();
  const site = await createTrackedSite(pool, await createUser(pool as never));
  await pool.query("update app_public.sites set timezone = 'Europe/Istanbul' where id = $1", [site.id]);
  const { rows: [{ now }] } = await pool.query("select (extract(epoch from now()) * 1000)::float8 as now");
  const click = pageview(`v_${unique("csvclock").replace(/[^A-Za-z0-9_-]/g, "_")}`, now - 2 * 3600_000, "https://shop.example/landing?gclid=G_csv_clock");
  await ingest(pool, site, [click]);
  const session = await sessionOf(pool, site, click);
  // The CRM's clock says the sale came an hour before the click that brought it.
  await pool.query("select app_public.confirm_sale_and_enqueue($1, 'CRM-clock', 10, 'TRY', $2::timestamptz, session_id => $3)",
    [site.id, new Date(now - 3 * 3600_000).toISOString(), session.id]);
  const { rows: [{ key }] } = await pool.query("select key from app_private.issue_api_key($1, 'editor', 'test', null)", [site.id]);
  const lines = (await (await get(`Bearer ${key}`)).text()).trimEnd().split("\n");
  expect(lines).toHaveLength(3);
  const { rows: [{ local }] } = await pool.query(
    "select to_char(($1::timestamptz + interval '1 second') at time zone 'Europe/Istanbul', 'YYYY-MM-DD HH24:MI:SS') as local", [session.started_at]);
  expect(lines[2].split(",")[2]).toBe(local);
});

test("exported rows become sent and stay in later files; the unmatchable one stays pending", async () => {
  const { rows } = await getRootPool().query(
    "select order_id, status, request_id from app_public.offline_conversion_queue where site_id = $1 order by order_id", [siteId]);
  expect(rows).toEqual([
    { order_id: "CRM-1", status: "sent", request_id: "csv" },
    { order_id: "CRM-2", status: "sent", request_id: "csv" },
    { order_id: "CRM-3", status: "pending", request_id: null },
  ]);
  const again = await get(basic(credential.username, credential.password));
  expect((await again.text()).trimEnd().split("\n")).toHaveLength(4);
});

test("wrong, unknown or missing credentials are refused with a Basic challenge", async () => {
  for (const auth of [basic(credential.username, "wrong"), basic("oci_nobody", credential.password), basic("", ""), "Basic !!!", undefined]) {
    const response = await get(auth);
    expect(response.status).toBe(401);
    expect(response.headers.get("www-authenticate")).toMatch(/^Basic /);
    const { body } = await readBody(response);
    expect(["invalid_credentials", "unauthenticated"]).toContain(body.error);
  }
});

test("API keys: editor and admin may fetch, viewer may not", async () => {
  expect((await get(`Bearer ${await apiKey("editor")}`)).status).toBe(200);
  expect((await get(`Bearer ${await apiKey("admin")}`)).status).toBe(200);
  const viewer = await get(`Bearer ${await apiKey("viewer")}`);
  expect(viewer.status).toBe(403);
  expect((await readBody(viewer)).body.error).toBe("forbidden");
});

test("a revoked credential stops working at once", async () => {
  const revoked = await runCli(["export-credential", "revoke", "--username", credential.username, "--json"]);
  expect(revoked.code).toBe(0);
  expect((await get(basic(credential.username, credential.password))).status).toBe(401);
});

test("a site delivering through an API destination exports nothing, so nothing is counted twice", async () => {
  await getRootPool().query("select app_public.create_destination($1, 'google_ads', '1234567890', '42')", [siteId]);
  const fresh = await runCli(["export-credential", "create", "--site", siteId, "--json"]);
  const { username, password } = JSON.parse(fresh.stdout);
  const response = await get(basic(username, password));
  expect(response.status).toBe(200);
  expect(await response.text()).toBe("");
});
