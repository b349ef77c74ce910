/*
 * Offline conversion delivery end to end: sales confirmed in the real database, credentials
 * sealed in the vault, deliverSiteConversions claiming the queue and sending through the real
 * Google client libraries (google-ads-node, @google-ads/datamanager) over plaintext gRPC to the
 * loopback fakes, with access tokens from the loopback OAuth fake. Each scenario checks both
 * sides: what the queue rows say afterwards (status, codes, retry_at, attempts, leases) and
 * what Google (the fake) actually received.
 */
import { createHash } from "node:crypto";
import { status as grpcStatus } from "@grpc/grpc-js";
import pg from "pg";
import { readConfig } from "../src/config";
import { deliverSiteConversions, type DeliverySummary } from "../src/delivery/deliver";
import { makeRails, type Rails } from "../src/delivery/rails";
import { DataManagerRail } from "../src/google/datamanager";
import type { Conversion, Destination, GoogleSettings, Rail } from "../src/google/types";
import { storeRefreshToken } from "../src/vault/credentials";
import { Vault } from "../src/vault/vault";
import { startDataManagerFake, type DataManagerFake, type FakeEvent } from "./fakes/google/datamanager-fake";
import { startGoogleAdsFake, type GoogleAdsFake, type ProtoObject } from "./fakes/google/google-ads-fake";
import { startOAuthFake, type OAuthFake } from "./fakes/google/oauth-fake";
import { createUser, getRootPool, unique } from "./helpers/db";

const DEVELOPER_TOKEN = "dev-token";
const CUSTOMER_ID = "1234567890";
const LOGIN_CUSTOMER_ID = "1112223333";
const CONVERSION_ACTION = "987654321";
const ACTION_NAME = `customers/${CUSTOMER_ID}/conversionActions/${CONVERSION_ACTION}`;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
/** Google's time format with the site's offset: Europe/Istanbul is +03:00 all year. */
const GOOGLE_TIME = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\+03:00$/;

let oauth: OAuthFake;
let ads: GoogleAdsFake;
let dm: DataManagerFake;
let rails: Rails;
let owner: pg.Pool;
let vault: Vault;
let ownerUserId: string;

const root = () => getRootPool();
const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest("hex");

beforeAll(async () => {
  oauth = await startOAuthFake();
  ads = await startGoogleAdsFake({ developerToken: DEVELOPER_TOKEN, isValidAccessToken: (token) => oauth.isValidAccessToken(token) });
  dm = await startDataManagerFake({ isValidAccessToken: (token) => oauth.isValidAccessToken(token) });
  const settings: GoogleSettings = {
    developerToken: DEVELOPER_TOKEN,
    clientId: "client-id",
    clientSecret: "client-secret",
    dataManagerEndpoint: dm.endpoint,
    googleAdsEndpoint: ads.endpoint,
    insecure: true,
    oauthTokenUrl: oauth.url,
  };
  rails = makeRails(settings);
  const config = readConfig();
  owner = new pg.Pool({ connectionString: config.databaseUrl, max: 4 });
  vault = new Vault(config.vaultKeys);
  const client = await root().connect();
  try {
    ownerUserId = await createUser(client);
  } finally {
    client.release();
  }
});

afterAll(async () => {
  await rails?.close();
  await ads?.close();
  await dm?.close();
  await oauth?.close();
  await owner?.end();
});

beforeEach(() => {
  ads.behave({});
  ads.requests.length = 0;
  dm.reset();
});

// ---------------------------------------------------------------------------------------------
// Fixtures

interface TestSite {
  id: string;
  destinationId: string;
  refreshToken: string;
  rail: Rail;
}

/** A site in Istanbul with one destination on the given rail and a freshly granted refresh token in the vault. */
async function createDeliverySite(rail: Rail,
  { consentMode = "implied", credentials = true }: { consentMode?: "implied" | "required"; credentials?: boolean } = {}): Promise<TestSite> {
  const { rows: [site] } = await root().query(
    `select id from app_private.create_site($1, $2, 'shop.example', consent_mode => $3, timezone => 'Europe/Istanbul', currency => 'TRY')`,
    [ownerUserId, unique("Delivery"), consentMode]);
  const { rows: [destination] } = await root().query(
    "select id, customer_id, login_customer_id from app_public.create_destination($1, $2, '123-456-7890', $3, '111-222-3333')",
    [site.id, rail, CONVERSION_ACTION]);
  expect(destination).toMatchObject({ customer_id: CUSTOMER_ID, login_customer_id: LOGIN_CUSTOMER_ID });
  const refreshToken = `1//${unique("refresh")}`;
  if (credentials) {
    oauth.grant(refreshToken);
    await storeRefreshToken((text, values) => root().query(text, values), vault, destination.id, refreshToken);
  }
  return { id: site.id, destinationId: destination.id, refreshToken, rail };
}

interface SaleInput {
  externalId?: string;
  amount?: string;
  occurredAt?: Date;
  gclid?: string | null;
  email?: string | null;
  phone?: string | null;
  consent?: Record<string, string> | null;
}

/** A second-precise time, so the expected Google time string is exact. */
const wholeSeconds = (ms: number) => new Date(Math.floor(ms / 1000) * 1000);

/** A sale confirmed by the CRM (as the superuser, like the webhook's owner connection); returns its external id. */
async function confirmSale(siteId: string, input: SaleInput = {}): Promise<string> {
  const externalId = input.externalId ?? unique("ORD");
  await root().query(
    `select app_public.confirm_sale_and_enqueue(site_id => $1, external_id => $2, amount => $3::numeric, currency => 'TRY',
       occurred_at => $4::timestamptz, gclid => $5, email => $6, phone => $7, consent => $8::jsonb)`,
    [siteId, externalId, input.amount ?? "100.00", input.occurredAt ?? wholeSeconds(Date.now() - 2 * HOUR),
      input.gclid === undefined ? `Cj0KCQ-${externalId}` : input.gclid, input.email ?? null, input.phone ?? null,
      input.consent ? JSON.stringify(input.consent) : null]);
  return externalId;
}

interface QueueRow {
  id: string;
  sale_id: string;
  kind: "conversion" | "retraction";
  status: string;
  order_id: string;
  click_id: string | null;
  ad_user_data: string;
  ad_personalization: string;
  attempts: number;
  retry_at: Date;
  locked_by: string | null;
  locked_until: Date | null;
  last_error_code: string | null;
  last_error_message: string | null;
  request_id: string | null;
  sent_at: Date | null;
  accepted_at: Date | null;
}

async function queueRows(siteId: string): Promise<QueueRow[]> {
  const { rows } = await root().query<QueueRow>(
    "select * from app_public.offline_conversion_queue where site_id = $1 order by kind, order_id", [siteId]);
  return rows;
}

async function rowOf(siteId: string, orderId: string, kind = "conversion"): Promise<QueueRow> {
  const row = (await queueRows(siteId)).find((r) => r.order_id === orderId && r.kind === kind);
  if (!row) throw new Error(`no ${kind} row for ${orderId}`);
  return row;
}

async function destinationOf(site: TestSite): Promise<{ status: string; status_reason: string | null; credentials_last4: string | null }> {
  const { rows: [row] } = await root().query(
    "select status, status_reason, credentials_last4 from app_public.destinations where id = $1", [site.destinationId]);
  return row;
}

function deliver(site: TestSite): Promise<DeliverySummary> {
  return deliverSiteConversions({ owner, vault, rails }, site.id);
}

/** A run as the worker would start it: the site's upload job, if any, is taken off first. */
async function deliverFromScratch(site: TestSite): Promise<DeliverySummary> {
  await root().query("delete from graphile_worker._private_jobs where key = $1", [`upload_conversions:google:${site.id}`]);
  return deliver(site);
}

/**
 * A call through a Google forwarding number (the provider says so), sealed with a value: its
 * sale's conversion has no click id, and ad_user_data granted so the caller may be sent. Returns the call's id.
 */
async function forwardedCallSale(site: TestSite, caller: string): Promise<string> {
  const providerCallId = unique("fwd").replace(/[^A-Za-z0-9_.:-]/g, "_");
  await root().query("select app_private.record_call_event($1, $2::jsonb)", [site.id, JSON.stringify({
    call_id: providerCallId, status: "answered", caller, tracking_number: "+908501112233",
    started_at: new Date(Date.now() - 2 * HOUR).toISOString(), duration_s: 95, google_forwarding: true })]);
  const { rows: [call] } = await root().query("select id from app_public.calls where site_id = $1 and call_id = $2", [site.id, providerCallId]);
  await root().query("select app_public.seal_call($1, $2, 750)", [site.id, call.id]);
  await root().query("update app_public.offline_conversion_queue set ad_user_data = 'granted' where site_id = $1", [site.id]);
  return call.id;
}

/** Seconds until the site's upload job runs again (negative when already due), or undefined when none waits. */
async function secondsToNextRun(site: TestSite): Promise<number | undefined> {
  const { rows } = await root().query("select extract(epoch from run_at - now())::float8 as seconds from graphile_worker.jobs where key = $1",
    [`upload_conversions:google:${site.id}`]);
  return rows[0]?.seconds;
}

/** Every ClickConversion the Google Ads fake was sent, in order. */
const clickConversions = (): ProtoObject[] =>
  ads.requests.filter((r) => r.method === "UploadClickConversions").flatMap((r) => r.request.conversions ?? []);
/** Waits until the Google Ads fake has received `count` requests (it answers them after its latency). */
async function untilAdsReceived(count: number): Promise<void> {
  for (let tries = 0; ads.requests.length < count; tries++) {
    if (tries > 500) throw new Error(`the fake received ${ads.requests.length} requests, not ${count}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
/** Every event the Data Manager fake received in a request it accepted. */
const acceptedEvents = (): FakeEvent[] => dm.accepted.flatMap((r) => r.events ?? []);

/** `date` as Google wants it in Istanbul (UTC+3, no DST). */
function istanbulTime(date: Date): string {
  const local = new Date(date.getTime() + 3 * HOUR).toISOString();
  return `${local.slice(0, 10)} ${local.slice(11, 19)}+03:00`;
}

/** retry_at is `now + seconds` as the database saw it, within the duration of the test step. */
function expectRetryIn(row: QueueRow, seconds: number, before: number, after = Date.now()): void {
  expect(row.retry_at.getTime()).toBeGreaterThanOrEqual(before + seconds * 1000 - 2000);
  expect(row.retry_at.getTime()).toBeLessThanOrEqual(after + seconds * 1000 + 2000);
}

const byOrder = <T extends ProtoObject>(items: T[], key = "order_id") => new Map(items.map((item) => [item[key] as string, item]));

// ---------------------------------------------------------------------------------------------
// Google Ads API rail

describe("Google Ads API rail", () => {
  test("all accepted: every row accepted; order id, time in the site's zone, value, currency, consent and hashed identifiers reach Google", async () => {
    const site = await createDeliverySite("google_ads");
    const at = wholeSeconds(Date.now() - 3 * HOUR);
    const first = await confirmSale(site.id, { amount: "1250.50", occurredAt: at, email: "  Ayse.Yilmaz@GMail.com ", phone: "+90 (532) 123-45-67" });
    const second = await confirmSale(site.id, { amount: "99", occurredAt: new Date(at.getTime() + 61_000), email: "Mehmet@Example.COM",
      consent: { ad_user_data: "granted", ad_personalization: "denied" } });
    const third = await confirmSale(site.id, { amount: "0.01", occurredAt: new Date(at.getTime() + 3_599_000) });

    const before = Date.now();
    const summary = await deliver(site);
    expect(summary).toEqual({ destination: site.destinationId, claimed: 3, accepted: 3, sent: 0, retry: 0, failed: 0 });

    for (const row of await queueRows(site.id)) {
      expect(row).toMatchObject({ status: "accepted", attempts: 1, locked_by: null, locked_until: null, last_error_code: null, last_error_message: null });
      expect(row.accepted_at!.getTime()).toBeGreaterThanOrEqual(before - 1000);
      expect(row.sent_at).not.toBeNull();
    }

    // The destination's totals say what happened: three accepted, nothing else.
    const { rows: [totals] } = await getRootPool().query(
      "select (app_public.destinations_conversion_totals(d)).* from app_public.destinations d where d.id = $1", [site.destinationId]);
    expect(totals).toEqual({ pending: 0, processing: 0, sent: 0, accepted: 3, failed: 0, cancelled: 0, retractions: 0 });

    expect(ads.requests).toHaveLength(1);
    const [{ method, request, metadata }] = ads.requests;
    expect(method).toBe("UploadClickConversions");
    expect(request.customer_id).toBe(CUSTOMER_ID);
    expect(request.partial_failure).toBe(true);
    expect(metadata).toMatchObject({ "developer-token": DEVELOPER_TOKEN, "login-customer-id": LOGIN_CUSTOMER_ID });
    expect(oauth.isValidAccessToken(metadata.authorization.replace(/^Bearer /, ""))).toBe(true);
    expect(metadata.authorization).not.toContain(site.refreshToken);

    const sent = byOrder(request.conversions);
    expect([...sent.keys()].sort()).toEqual([first, second, third].sort());
    expect(sent.get(first)).toEqual({
      gclid: `Cj0KCQ-${first}`,
      conversion_action: ACTION_NAME,
      conversion_date_time: istanbulTime(at),
      conversion_value: 1250.5,
      currency_code: "TRY",
      order_id: first,
      consent: { ad_user_data: "GRANTED", ad_personalization: "GRANTED" },
      user_identifiers: [
        // Google's normalisation: trimmed, lower-case, no dots before @gmail.com; phone in E.164.
        { user_identifier_source: "FIRST_PARTY", hashed_email: sha256("ayseyilmaz@gmail.com") },
        { user_identifier_source: "FIRST_PARTY", hashed_phone_number: sha256("+905321234567") },
      ],
    });
    expect(sent.get(second)).toEqual({
      gclid: `Cj0KCQ-${second}`,
      conversion_action: ACTION_NAME,
      conversion_date_time: istanbulTime(new Date(at.getTime() + 61_000)),
      conversion_value: 99,
      currency_code: "TRY",
      order_id: second,
      consent: { ad_user_data: "GRANTED", ad_personalization: "DENIED" },
      user_identifiers: [{ user_identifier_source: "FIRST_PARTY", hashed_email: sha256("mehmet@example.com") }],
    });
    expect(sent.get(third)).toMatchObject({ conversion_value: 0.01, conversion_date_time: istanbulTime(new Date(at.getTime() + 3_599_000)) });
    expect(sent.get(third)!.user_identifiers ?? []).toEqual([]);
    for (const conversion of sent.values()) expect(conversion.conversion_date_time).toMatch(GOOGLE_TIME);

    // Nothing is due any more: a second run claims and sends nothing.
    expect(await deliver(site)).toMatchObject({ claimed: 0 });
    expect(ads.requests).toHaveLength(1);
  });

  test("partial failure: TOO_RECENT_EVENT waits 6 h, ORDER_ID_ALREADY_IN_USE counts as delivered, UNPARSEABLE_GCLID and not-allowlisted fail with their codes", async () => {
    const site = await createDeliverySite("google_ads");
    const ok = await confirmSale(site.id);
    const recent = await confirmSale(site.id);
    const inUse = await confirmSale(site.id);
    const badGclid = await confirmSale(site.id);
    const notAllowlisted = await confirmSale(site.id);
    const errors: Record<string, { category: string; code: string; message?: string }> = {
      [recent]: { category: "conversion_upload_error", code: "TOO_RECENT_EVENT" },
      [inUse]: { category: "conversion_upload_error", code: "ORDER_ID_ALREADY_IN_USE" },
      [badGclid]: { category: "conversion_upload_error", code: "UNPARSEABLE_GCLID", message: "The gclid could not be decoded." },
      [notAllowlisted]: { category: "not_allowlisted_error", code: "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE", message: "Customer is not allowlisted." },
    };
    ads.behave({ rowError: (row) => errors[row.order_id] });

    const before = Date.now();
    const summary = await deliver(site);
    const after = Date.now();
    expect(summary).toMatchObject({ claimed: 5, accepted: 2, sent: 0, retry: 1, failed: 2 });
    expect(clickConversions().map((c) => c.order_id).sort()).toEqual([ok, recent, inUse, badGclid, notAllowlisted].sort());

    expect(await rowOf(site.id, ok)).toMatchObject({ status: "accepted", last_error_code: null });
    const recentRow = await rowOf(site.id, recent);
    expect(recentRow).toMatchObject({ status: "pending", last_error_code: "TOO_RECENT_EVENT", locked_by: null, locked_until: null, accepted_at: null });
    expectRetryIn(recentRow, 6 * 3600, before, after);
    const inUseRow = await rowOf(site.id, inUse);
    expect(inUseRow).toMatchObject({ status: "accepted", last_error_code: "ORDER_ID_ALREADY_IN_USE" });
    expect(inUseRow.accepted_at).not.toBeNull();
    expect(await rowOf(site.id, badGclid)).toMatchObject({
      status: "failed", last_error_code: "UNPARSEABLE_GCLID", last_error_message: "The gclid could not be decoded.", accepted_at: null, locked_by: null,
    });
    expect(await rowOf(site.id, notAllowlisted)).toMatchObject({
      status: "failed", last_error_code: "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE", accepted_at: null,
    });

    // The postponed row is not due yet, and final rows are never claimed again.
    expect(await deliver(site)).toMatchObject({ claimed: 0 });
    expect(ads.requests).toHaveLength(1);
  });

  test("more rows than a batch: each batch is claimed, sent and recorded in turn", async () => {
    const site = await createDeliverySite("google_ads");
    const orders: string[] = [];
    for (let i = 0; i < 5; i++) orders.push(await confirmSale(site.id));
    const summary = await deliverSiteConversions({ owner, vault, rails, batchSize: 2 }, site.id);
    expect(summary).toMatchObject({ claimed: 5, accepted: 5 });
    expect(ads.requests.map((r) => r.request.conversions.length)).toEqual([2, 2, 1]);
    expect(clickConversions().map((c) => c.order_id).sort()).toEqual([...orders].sort());
    expect((await queueRows(site.id)).every((r) => r.status === "accepted" && r.attempts === 1)).toBe(true);
  });

  test("UNAVAILABLE leaves the batch pending with a retry code; once due, the next run delivers the same order ids", async () => {
    const site = await createDeliverySite("google_ads");
    const orders = [await confirmSale(site.id), await confirmSale(site.id)];
    ads.behave({ unavailableCalls: 1 });

    const before = Date.now();
    expect(await deliver(site)).toMatchObject({ claimed: 2, accepted: 0, retry: 2, failed: 0 });
    const after = Date.now();
    for (const row of await queueRows(site.id)) {
      expect(row).toMatchObject({ status: "pending", last_error_code: "UNAVAILABLE", attempts: 1, locked_by: null, sent_at: null, accepted_at: null });
      expectRetryIn(row, 60, before, after);
    }
    // Not due yet: nothing is sent.
    expect(await deliver(site)).toMatchObject({ claimed: 0 });
    expect(ads.requests).toHaveLength(1);

    await root().query("update app_public.offline_conversion_queue set retry_at = now() - interval '1 second' where site_id = $1", [site.id]);
    expect(await deliver(site)).toMatchObject({ claimed: 2, accepted: 2, retry: 0 });
    for (const row of await queueRows(site.id)) {
      expect(row).toMatchObject({ status: "accepted", last_error_code: null, last_error_message: null, attempts: 2 });
    }
    expect(ads.requests).toHaveLength(2);
    const [failed, succeeded] = ads.requests.map((r) => r.request.conversions.map((c: ProtoObject) => c.order_id).sort());
    expect(failed).toEqual([...orders].sort());
    expect(succeeded).toEqual(failed);
  });

  test("quota exhausted: rows wait an hour, or as long as Google's retry delay says", async () => {
    const site = await createDeliverySite("google_ads");
    await confirmSale(site.id);
    await confirmSale(site.id);
    ads.behave({ quotaExhausted: {} });

    let before = Date.now();
    expect(await deliver(site)).toMatchObject({ claimed: 2, retry: 2, accepted: 0, failed: 0 });
    for (const row of await queueRows(site.id)) {
      expect(row).toMatchObject({ status: "pending", last_error_code: "RESOURCE_EXHAUSTED", locked_by: null });
      expectRetryIn(row, 3600, before);
    }

    await root().query("update app_public.offline_conversion_queue set retry_at = now() - interval '1 second' where site_id = $1", [site.id]);
    ads.behave({ quotaExhausted: { retryDelaySeconds: 7200 } });
    before = Date.now();
    expect(await deliver(site)).toMatchObject({ claimed: 2, retry: 2 });
    for (const row of await queueRows(site.id)) {
      expect(row).toMatchObject({ status: "pending", last_error_code: "RESOURCE_EXHAUSTED", attempts: 2 });
      expectRetryIn(row, 7200, before);
    }
  });

  test("token revoked at Google's OAuth server: needs_reauth with the code, rows back to pending with no attempt used; new credentials make it active and delivery resumes", async () => {
    const site = await createDeliverySite("google_ads");
    const orders = [await confirmSale(site.id), await confirmSale(site.id)];
    oauth.revoke(site.refreshToken);

    const before = Date.now();
    const summary = await deliver(site);
    expect(summary).toMatchObject({ skipped: "needs_reauth", claimed: 2, accepted: 0, retry: 0, failed: 0 });
    expect(await destinationOf(site)).toMatchObject({ status: "needs_reauth", status_reason: "INVALID_GRANT" });
    for (const row of await queueRows(site.id)) {
      expect(row).toMatchObject({ status: "pending", attempts: 0, locked_by: null, locked_until: null, last_error_code: "INVALID_GRANT", sent_at: null });
      expect(row.retry_at.getTime()).toBeLessThanOrEqual(Date.now() + 1000);
      expect(row.retry_at.getTime()).toBeGreaterThanOrEqual(before - 1000);
    }
    // Without an access token nothing could be sent.
    expect(ads.requests).toHaveLength(0);

    // While it needs re-authorisation nothing is claimed.
    expect(await deliver(site)).toMatchObject({ skipped: "needs_reauth", claimed: 0 });
    expect((await queueRows(site.id)).map((r) => r.attempts)).toEqual([0, 0]);

    const newToken = `1//${unique("regranted")}`;
    const access = oauth.grant(newToken);
    const stored = await storeRefreshToken((text, values) => root().query(text, values), vault, site.destinationId, newToken);
    expect(stored).toMatchObject({ status: "active", status_reason: null, credentials_last4: newToken.slice(-4) });
    expect(await destinationOf(site)).toMatchObject({ status: "active", status_reason: null });

    expect(await deliver(site)).toMatchObject({ claimed: 2, accepted: 2 });
    expect((await queueRows(site.id)).map((r) => [r.status, r.attempts, r.last_error_code])).toEqual([["accepted", 1, null], ["accepted", 1, null]]);
    expect(ads.requests).toHaveLength(1);
    expect(ads.requests[0].metadata.authorization).toBe(`Bearer ${access}`);
    expect(clickConversions().map((c) => c.order_id).sort()).toEqual([...orders].sort());
  });

  test("a destination without stored credentials needs re-authorisation (NO_CREDENTIALS); a paused one delivers nothing", async () => {
    const bare = await createDeliverySite("google_ads", { credentials: false });
    await confirmSale(bare.id);
    expect(await deliver(bare)).toMatchObject({ skipped: "needs_reauth", claimed: 0 });
    expect(await destinationOf(bare)).toMatchObject({ status: "needs_reauth", status_reason: "NO_CREDENTIALS" });
    expect(await queueRows(bare.id)).toEqual([expect.objectContaining({ status: "pending", attempts: 0 })]);

    const paused = await createDeliverySite("google_ads");
    await confirmSale(paused.id);
    await root().query("select app_public.set_destination_status($1, 'paused')", [paused.destinationId]);
    expect(await deliver(paused)).toEqual({ skipped: "no_destination", claimed: 0, accepted: 0, sent: 0, retry: 0, failed: 0 });
    expect(await queueRows(paused.id)).toEqual([expect.objectContaining({ status: "pending", attempts: 0 })]);
    expect(ads.requests).toHaveLength(0);
  });

  test("Google Ads answering OAUTH_TOKEN_REVOKED: one retry with a fresh token, then needs_reauth with Google's code", async () => {
    const site = await createDeliverySite("google_ads");
    await confirmSale(site.id);
    ads.behave({ tokenRevoked: true });

    expect(await deliver(site)).toMatchObject({ skipped: "needs_reauth", claimed: 1, accepted: 0 });
    expect(await destinationOf(site)).toMatchObject({ status: "needs_reauth", status_reason: "OAUTH_TOKEN_REVOKED" });
    expect(await queueRows(site.id)).toEqual([expect.objectContaining({ status: "pending", attempts: 0, locked_by: null, last_error_code: "OAUTH_TOKEN_REVOKED" })]);
    expect(ads.requests).toHaveLength(2);
  });

  test("worker killed mid-batch: its lease expires, the re-send carries the same order ids, Google and our records count each conversion once, and the dead worker's late outcomes change nothing", async () => {
    const site = await createDeliverySite("google_ads");
    const orders = [await confirmSale(site.id), await confirmSale(site.id), await confirmSale(site.id)];
    // Google keeps each order id once: a second upload of one is ORDER_ID_ALREADY_IN_USE.
    const atGoogle = new Map<string, number>();
    ads.behave({
      rowError: (row) => {
        atGoogle.set(row.order_id, (atGoogle.get(row.order_id) ?? 0) + 1);
        return atGoogle.get(row.order_id)! > 1 ? { category: "conversion_upload_error", code: "ORDER_ID_ALREADY_IN_USE" } : undefined;
      },
    });

    // The doomed worker claims the batch under a 10 s lease, uploads it, and dies before recording anything.
    const { rows: claimed } = await owner.query<{ id: string }>(
      "select id from app_private.claim_offline_conversion_jobs('google', 2000, $1, 'dead-worker', 10)", [site.id]);
    expect(claimed).toHaveLength(3);
    const { rows: payloads } = await owner.query("select * from app_private.conversion_payloads($1, $2::uuid[])", [site.id, claimed.map((c) => c.id)]);
    const destination: Destination = {
      rail: "google_ads", customerId: CUSTOMER_ID, loginCustomerId: LOGIN_CUSTOMER_ID, conversionAction: CONVERSION_ACTION, refreshToken: site.refreshToken,
    };
    const conversions: Conversion[] = payloads.map((p) => ({
      rowId: p.id, orderId: p.order_id, clickId: { type: p.click_id_type, value: p.click_id }, conversionTime: p.conversion_time,
      value: p.value, currency: p.currency, consent: { adUserData: p.ad_user_data, adPersonalization: p.ad_personalization },
    }));
    const deadOutcome = await rails.railFor("google_ads").uploadConversions(destination, conversions);
    expect(deadOutcome).toEqual({ kind: "rows", rows: [{ kind: "accepted" }, { kind: "accepted" }, { kind: "accepted" }] });
    for (const row of await queueRows(site.id)) expect(row).toMatchObject({ status: "processing", locked_by: "dead-worker", attempts: 1 });

    // While the lease holds, nobody else takes the rows.
    expect(await deliver(site)).toMatchObject({ claimed: 0 });
    expect(ads.requests).toHaveLength(1);

    await root().query("update app_public.offline_conversion_queue set locked_until = now() - interval '1 second' where site_id = $1", [site.id]);
    expect(await deliver(site)).toMatchObject({ claimed: 3, accepted: 3, retry: 0, failed: 0 });

    expect(ads.requests).toHaveLength(2);
    const [firstSend, resend] = ads.requests.map((r) => r.request.conversions.map((c: ProtoObject) => c.order_id).sort());
    expect(firstSend).toEqual([...orders].sort());
    expect(resend).toEqual(firstSend);
    // Google saw each order id twice and kept it once; we hold exactly one conversion row per sale, accepted.
    expect([...atGoogle.values()]).toEqual([2, 2, 2]);
    const rows = await queueRows(site.id);
    expect(rows).toHaveLength(3);
    expect(new Set(rows.map((r) => r.sale_id)).size).toBe(3);
    for (const row of rows) {
      expect(row).toMatchObject({ kind: "conversion", status: "accepted", last_error_code: "ORDER_ID_ALREADY_IN_USE", attempts: 2, locked_by: null });
    }

    // The dead worker comes back and reports: its lease is gone, so nothing changes.
    const snapshot = await queueRows(site.id);
    const late = claimed.map((c) => ({ id: c.id, kind: "failed", code: "LATE", message: "from a dead worker" }));
    const { rows: [{ changed }] } = await owner.query(
      "select app_private.record_upload_outcomes($1, 'dead-worker', $2::jsonb, 'late-request') as changed", [site.id, JSON.stringify(late)]);
    expect(changed).toBe(0);
    const { rows: [{ released }] } = await owner.query(
      "select app_private.release_claimed_conversions($1, 'dead-worker', 'LATE', 'late', 0) as released", [site.id]);
    expect(released).toBe(0);
    expect(await queueRows(site.id)).toEqual(snapshot);
  });

  test("a batch in flight is held by its transaction: others read it pending and cannot take it, and it is written once, when Google has answered", async () => {
    const site = await createDeliverySite("google_ads");
    const orders = [await confirmSale(site.id), await confirmSale(site.id)];
    // Long enough for the checks below to run while the batch is at Google, even on a busy machine.
    ads.behave({ latencyMs: 1500 });
    const delivery = deliver(site);
    await untilAdsReceived(1);

    // On its way to Google: nothing about the rows has changed for anyone else, and no other claimer gets them.
    for (const row of await queueRows(site.id)) expect(row).toMatchObject({ status: "pending", attempts: 0, locked_by: null, sent_at: null });
    const { rows: taken } = await root().query("select id from app_private.claim_offline_conversion_jobs('google', 2000, $1, 'other-worker', 60)", [site.id]);
    expect(taken).toEqual([]);
    const { rows: [held] } = await root().query(
      "select count(*)::int as n from pg_stat_activity where datname = current_database() and state = 'idle in transaction' and query like '%lock_conversion_batch%'");
    expect(held.n).toBe(1);

    expect(await delivery).toMatchObject({ claimed: 2, accepted: 2 });
    expect(clickConversions().map((c) => c.order_id).sort()).toEqual([...orders].sort());
    for (const row of await queueRows(site.id)) expect(row).toMatchObject({ status: "accepted", attempts: 1, locked_by: null, locked_until: null });
  });

  test("the uploader's connection dies while its batch is at Google: the rows are due again at once, untouched, and the re-send carries the same order ids", async () => {
    const site = await createDeliverySite("google_ads");
    const orders = [await confirmSale(site.id), await confirmSale(site.id)];
    // Google keeps each order id once: a second upload of one is ORDER_ID_ALREADY_IN_USE.
    const atGoogle = new Map<string, number>();
    ads.behave({
      latencyMs: 1000,
      rowError: (row) => {
        atGoogle.set(row.order_id, (atGoogle.get(row.order_id) ?? 0) + 1);
        return atGoogle.get(row.order_id)! > 1 ? { category: "conversion_upload_error", code: "ORDER_ID_ALREADY_IN_USE" } : undefined;
      },
    });
    const doomed = deliver(site);
    await untilAdsReceived(1);
    const { rows: [{ terminated }] } = await root().query(
      `select count(pg_terminate_backend(pid))::int as terminated from pg_stat_activity
        where datname = current_database() and state = 'idle in transaction' and query like '%lock_conversion_batch%'`);
    expect(terminated).toBe(1);
    await expect(doomed).rejects.toThrow();

    // Google took the upload, but nothing of it was recorded: the rows are as they were, due now.
    for (const row of await queueRows(site.id)) expect(row).toMatchObject({ status: "pending", attempts: 0, sent_at: null, request_id: null });
    ads.behave({ rowError: (row) => (atGoogle.get(row.order_id) ? { category: "conversion_upload_error", code: "ORDER_ID_ALREADY_IN_USE" } : undefined) });
    expect(await deliver(site)).toMatchObject({ claimed: 2, accepted: 2, retry: 0, failed: 0 });
    const [firstSend, resend] = ads.requests.map((r) => r.request.conversions.map((c: ProtoObject) => c.order_id).sort());
    expect(firstSend).toEqual([...orders].sort());
    expect(resend).toEqual(firstSend);
    for (const row of await queueRows(site.id)) {
      expect(row).toMatchObject({ status: "accepted", last_error_code: "ORDER_ID_ALREADY_IN_USE", attempts: 1 });
    }
  });

  test("a worker that died before sending: the successor sends the conversions once, with the same order ids", async () => {
    const site = await createDeliverySite("google_ads");
    const orders = [await confirmSale(site.id), await confirmSale(site.id)];
    const { rows: claimed } = await owner.query("select id from app_private.claim_offline_conversion_jobs('google', 2000, $1, 'dead-worker', 10)", [site.id]);
    expect(claimed).toHaveLength(2);
    await root().query("update app_public.offline_conversion_queue set locked_until = now() - interval '1 second' where site_id = $1", [site.id]);

    expect(await deliver(site)).toMatchObject({ claimed: 2, accepted: 2 });
    expect(clickConversions().map((c) => c.order_id).sort()).toEqual([...orders].sort());
    expect((await queueRows(site.id)).map((r) => [r.status, r.attempts])).toEqual([["accepted", 2], ["accepted", 2]]);
    const { rows: [{ changed }] } = await owner.query(
      "select app_private.record_upload_outcomes($1, 'dead-worker', $2::jsonb) as changed",
      [site.id, JSON.stringify(claimed.map((c) => ({ id: c.id, kind: "retry", code: "LATE" })))]);
    expect(changed).toBe(0);
    expect((await queueRows(site.id)).map((r) => r.status)).toEqual(["accepted", "accepted"]);
  });
});

// ---------------------------------------------------------------------------------------------
// Data Manager API rail

describe("Data Manager API rail", () => {
  test("external ids no rail would take (spaces, non-ASCII, over 64 characters) go as a stable om-<digest> order id; plain ones go as they are", async () => {
    const site = await createDeliverySite("datamanager");
    const plain = await confirmSale(site.id, { externalId: "CRM-42", gclid: "Cj0KCQ-plain" });
    const spaced = await confirmSale(site.id, { externalId: "CRM 42 / Ayşe", gclid: "Cj0KCQ-spaced" });
    const long = await confirmSale(site.id, { externalId: "X".repeat(100), gclid: "Cj0KCQ-long" });
    const orderOf = async (externalId: string) => (await root().query(
      `select q.order_id from app_public.offline_conversion_queue q join app_public.sales s on s.site_id = q.site_id and s.id = q.sale_id
        where s.site_id = $1 and s.external_id = $2`, [site.id, externalId])).rows[0].order_id as string;
    expect(await orderOf(plain)).toBe("CRM-42");
    const digest = (externalId: string) => `om-${createHash("sha256").update(`${site.id}/${externalId}`).digest("hex").slice(0, 40)}`;
    expect(await orderOf(spaced)).toBe(digest(spaced));
    expect(await orderOf(long)).toBe(digest(long));

    const summary = await deliver(site);
    expect(summary).toMatchObject({ claimed: 3, sent: 3, failed: 0 });
    const received = dm.accepted.flatMap((request) => (request.events ?? []).map((event: FakeEvent) => event.transaction_id)).sort();
    expect(received).toEqual(["CRM-42", digest(spaced), digest(long)].sort());
  });

  test("rows become sent with Google's request id; after the status-check delay RetrieveRequestStatus settles them to accepted", async () => {
    const site = await createDeliverySite("datamanager");
    const at = wholeSeconds(Date.now() - 5 * HOUR);
    const first = await confirmSale(site.id, { amount: "1250.50", occurredAt: at, email: "Ayse.Yilmaz@gmail.com", phone: "0090 532 123 45 67" });
    const second = await confirmSale(site.id, { amount: "75", consent: { ad_user_data: "granted", ad_personalization: "denied" } });

    const summary = await deliver(site);
    expect(summary).toEqual({ destination: site.destinationId, claimed: 2, accepted: 0, sent: 2, retry: 0, failed: 0 });
    const rows = await queueRows(site.id);
    for (const row of rows) {
      expect(row).toMatchObject({ status: "sent", locked_by: null, last_error_code: null, accepted_at: null });
      expect(row.request_id).toEqual(expect.any(String));
      expect(row.sent_at).not.toBeNull();
    }
    expect(new Set(rows.map((r) => r.request_id)).size).toBe(1);

    expect(dm.accepted).toHaveLength(1);
    const [request] = dm.accepted;
    expect(request.destinations).toEqual([{
      operating_account: { account_type: "GOOGLE_ADS", account_id: CUSTOMER_ID },
      login_account: { account_type: "GOOGLE_ADS", account_id: LOGIN_CUSTOMER_ID },
      product_destination_id: CONVERSION_ACTION,
    }]);
    expect(request.encoding).toBe("HEX");
    const events = byOrder(acceptedEvents() as ProtoObject[], "transaction_id");
    expect(events.get(first)).toEqual({
      transaction_id: first,
      event_timestamp: { seconds: String(at.getTime() / 1000), nanos: 0 },
      conversion_value: 1250.5,
      currency: "TRY",
      ad_identifiers: { gclid: `Cj0KCQ-${first}` },
      user_data: { user_identifiers: [{ email_address: sha256("ayseyilmaz@gmail.com") }, { phone_number: sha256("+905321234567") }] },
      consent: { ad_user_data: "CONSENT_GRANTED", ad_personalization: "CONSENT_GRANTED" },
    });
    expect(events.get(second)).toMatchObject({
      transaction_id: second, conversion_value: 75, ad_identifiers: { gclid: `Cj0KCQ-${second}` },
      consent: { ad_user_data: "CONSENT_GRANTED", ad_personalization: "CONSENT_DENIED" },
    });
    expect(events.get(second)!.user_data).toBeUndefined();

    // Too soon to ask Google: the rows stay sent.
    expect(await deliver(site)).toMatchObject({ claimed: 0 });
    expect((await queueRows(site.id)).map((r) => r.status)).toEqual(["sent", "sent"]);

    await root().query("update app_public.offline_conversion_queue set sent_at = sent_at - interval '10 minutes' where site_id = $1", [site.id]);
    const before = Date.now();
    expect(await deliver(site)).toMatchObject({ claimed: 0 });
    for (const row of await queueRows(site.id)) {
      expect(row).toMatchObject({ status: "accepted", last_error_code: null });
      expect(row.accepted_at!.getTime()).toBeGreaterThanOrEqual(before - 1000);
    }
    // Settling sends no conversion again.
    expect(dm.accepted).toHaveLength(1);
  });

  test("conversions a scheduled CSV export took before the site moved to Data Manager are never asked about; the rail's own request settles", async () => {
    const site = await createDeliverySite("datamanager");
    const exported = await confirmSale(site.id);
    // Google's scheduled import took this one as a CSV line: sent, request id 'csv', nothing to ask about.
    await root().query("update app_public.offline_conversion_queue set status = 'sent', request_id = 'csv', sent_at = now() - interval '10 minutes' where site_id = $1", [site.id]);
    const order = await confirmSale(site.id);
    expect(await deliver(site)).toMatchObject({ claimed: 1, sent: 1 });
    await root().query("update app_public.offline_conversion_queue set sent_at = sent_at - interval '10 minutes' where site_id = $1 and request_id <> 'csv'", [site.id]);

    const { rows: asked } = await owner.query<{ request_id: string }>("select app_private.unsettled_requests($1) as request_id", [site.id]);
    expect(asked.map((r) => r.request_id)).toEqual([(await rowOf(site.id, order)).request_id]);
    await deliver(site);
    expect((await rowOf(site.id, order)).status).toBe("accepted");
    expect(await rowOf(site.id, exported)).toMatchObject({ status: "sent", request_id: "csv" });
  });

  test("rows a scheduled CSV export took schedule no upload run after the site moved to Data Manager", async () => {
    const site = await createDeliverySite("datamanager");
    await confirmSale(site.id);
    // Taken by Google's scheduled import ten minutes ago: nothing left to ask or send.
    await root().query("update app_public.offline_conversion_queue set status = 'sent', request_id = 'csv', sent_at = now() - interval '10 minutes' where site_id = $1", [site.id]);
    expect(await deliverFromScratch(site)).toMatchObject({ claimed: 0 });
    // Before migration 000034 the run scheduled the next one for five minutes after the CSV
    // took the rows, already past: the job ran again at once, and again, for two days.
    expect(await secondsToNextRun(site)).toBeUndefined();
  });

  test("a request Google will not report on is asked about once: its rows stay sent with Google's reason, and the site's other requests settle", async () => {
    const site = await createDeliverySite("datamanager");
    const forgotten = await confirmSale(site.id);
    expect(await deliver(site)).toMatchObject({ sent: 1 });
    // A request id Google no longer knows (the fake answers INVALID_REQUEST_ID for it).
    await root().query("update app_public.offline_conversion_queue set request_id = 'expired-request' where site_id = $1", [site.id]);
    const known = await confirmSale(site.id);
    expect(await deliver(site)).toMatchObject({ sent: 1 });
    await root().query("update app_public.offline_conversion_queue set sent_at = sent_at - interval '10 minutes' where site_id = $1", [site.id]);

    await deliver(site);
    expect(dm.statusAsked.sort()).toEqual(["expired-request", (await rowOf(site.id, known)).request_id].sort());
    expect(await rowOf(site.id, known)).toMatchObject({ status: "accepted", last_error_code: null });
    const refused = await rowOf(site.id, forgotten);
    expect(refused).toMatchObject({ status: "sent", request_id: "expired-request", last_error_code: "INVALID_REQUEST_ID", accepted_at: null });
    expect(refused.last_error_message).toMatch(/will not report .*INVALID_REQUEST_ID.*unknown/);

    // Never asked again, and no run is scheduled to ask.
    dm.statusAsked.length = 0;
    await deliver(site);
    expect(dm.statusAsked).toEqual([]);
    expect((await root().query("select app_private.unsettled_requests($1) as request_id", [site.id])).rows).toEqual([]);
  });

  test("while RetrieveRequestStatus is unavailable the rows stay unsettled, and settle on a later run", async () => {
    const site = await createDeliverySite("datamanager");
    const order = await confirmSale(site.id);
    expect(await deliver(site)).toMatchObject({ sent: 1 });
    await root().query("update app_public.offline_conversion_queue set sent_at = sent_at - interval '10 minutes' where site_id = $1", [site.id]);

    dm.behave({ failStatus: grpcStatus.UNAVAILABLE });
    await deliverFromScratch(site);
    expect(dm.statusAsked).toHaveLength(1);
    expect(await rowOf(site.id, order)).toMatchObject({ status: "sent", last_error_code: null });
    // Not straight back (migration 000036): as long as the request is old, ten minutes here.
    expect(await secondsToNextRun(site)).toBeGreaterThan(9 * 60);

    dm.behave({ failStatus: undefined });
    await deliver(site);
    expect(await rowOf(site.id, order)).toMatchObject({ status: "accepted", last_error_code: null });
  });

  test("a grant revoked while only settling is left: asking about a request finds it, and the destination needs a person", async () => {
    const site = await createDeliverySite("datamanager");
    const order = await confirmSale(site.id);
    expect(await deliver(site)).toMatchObject({ sent: 1 });
    await root().query("update app_public.offline_conversion_queue set sent_at = sent_at - interval '10 minutes' where site_id = $1", [site.id]);
    oauth.revoke(site.refreshToken);

    // Nothing to send, one request to ask about: the cached token is refused, a fresh one cannot be had.
    expect(await deliverFromScratch(site)).toMatchObject({ skipped: "needs_reauth", claimed: 0 });
    expect(await destinationOf(site)).toMatchObject({ status: "needs_reauth", status_reason: "INVALID_GRANT" });
    expect(await rowOf(site.id, order)).toMatchObject({ status: "sent", last_error_code: null });
    expect(await secondsToNextRun(site)).toBeUndefined();
  });

  test("a request Google is still processing is asked again after a wait as long as its age, from 5 minutes up to an hour; never at once", async () => {
    const site = await createDeliverySite("datamanager");
    const order = await confirmSale(site.id);
    expect(await deliverFromScratch(site)).toMatchObject({ sent: 1 });
    const near = (seconds: number | undefined, expected: number) => expect(Math.abs(seconds! - expected)).toBeLessThan(30);
    near(await secondsToNextRun(site), 5 * 60); // first asked five minutes after the upload

    dm.behave({ processing: true });
    const age = async (interval: string) =>
      root().query(`update app_public.offline_conversion_queue set sent_at = sent_at - interval '${interval}' where site_id = $1`, [site.id]);
    await age("10 minutes");
    await deliverFromScratch(site);
    expect(dm.statusAsked).toHaveLength(1);
    expect(await rowOf(site.id, order)).toMatchObject({ status: "sent", last_error_code: null });
    // Before migration 000036 this run's successor was due at once, and so on while Google worked.
    near(await secondsToNextRun(site), 10 * 60);

    await age("1 day");
    await deliverFromScratch(site);
    near(await secondsToNextRun(site), 60 * 60);

    dm.behave({ processing: false });
    await deliverFromScratch(site);
    expect(await rowOf(site.id, order)).toMatchObject({ status: "accepted" });
    expect(await secondsToNextRun(site)).toBeUndefined();
  });

  test("after the site moves from Data Manager to Google Ads, what its Data Manager destination sent is still asked about, with that destination's credentials", async () => {
    const site = await createDeliverySite("datamanager");
    const order = await confirmSale(site.id);
    expect(await deliver(site)).toMatchObject({ sent: 1 });
    const { request_id: requestId } = await rowOf(site.id, order);

    // The site moves: its Data Manager destination paused, a Google Ads one with credentials of its own.
    await root().query("select app_public.set_destination_status($1, 'paused')", [site.destinationId]);
    const { rows: [googleAds] } = await root().query(
      "select id from app_public.create_destination($1, 'google_ads', '123-456-7890', $2, '111-222-3333')", [site.id, CONVERSION_ACTION]);
    const adsToken = `1//${unique("ads-refresh")}`;
    oauth.grant(adsToken);
    await storeRefreshToken((text, values) => root().query(text, values), vault, googleAds.id, adsToken);
    await root().query("update app_public.offline_conversion_queue set sent_at = sent_at - interval '10 minutes' where site_id = $1", [site.id]);

    // Before migration 000051 nobody asked: the row waited, then ended NO_PROCESSING_STATUS.
    await deliverFromScratch(site);
    expect(dm.statusAsked).toEqual([requestId]);
    expect(await rowOf(site.id, order)).toMatchObject({ status: "accepted", last_error_code: null });
    expect(await destinationOf(site)).toMatchObject({ status: "paused" });
  });

  test("rows Google gave no processing status for in two days get NO_PROCESSING_STATUS and are not asked about again; younger ones still are", async () => {
    const site = await createDeliverySite("datamanager");
    const old = await confirmSale(site.id);
    expect(await deliver(site)).toMatchObject({ sent: 1 });
    await root().query("update app_public.offline_conversion_queue set sent_at = now() - interval '49 hours' where site_id = $1", [site.id]);
    const young = await confirmSale(site.id);
    expect(await deliver(site)).toMatchObject({ sent: 1 });
    await root().query("update app_public.offline_conversion_queue set sent_at = sent_at - interval '10 minutes' where site_id = $1 and order_id = $2", [site.id, young]);

    dm.behave({ processing: true });
    await deliverFromScratch(site);
    expect(await rowOf(site.id, old)).toMatchObject({ status: "sent", last_error_code: "NO_PROCESSING_STATUS", accepted_at: null });
    expect((await rowOf(site.id, old)).last_error_message).toMatch(/no processing status within two days/);
    expect(await rowOf(site.id, young)).toMatchObject({ status: "sent", last_error_code: null });
    expect(dm.statusAsked).toEqual([(await rowOf(site.id, young)).request_id]);
  });

  test("a batch with one row Google refuses: that row fails with Google's reason, the others are sent and later accepted", async () => {
    const site = await createDeliverySite("datamanager");
    const orders: string[] = [];
    for (let i = 0; i < 5; i++) orders.push(await confirmSale(site.id));
    const bad = orders[2];
    dm.behave({ rejectEvent: (event) => (event.transaction_id === bad ? "INVALID_FORMAT" : undefined) });

    expect(await deliver(site)).toMatchObject({ claimed: 5, sent: 4, failed: 1, retry: 0, accepted: 0 });
    const badRow = await rowOf(site.id, bad);
    expect(badRow).toMatchObject({ status: "failed", last_error_code: "INVALID_FORMAT", locked_by: null, accepted_at: null });
    expect(badRow.last_error_message).toContain(bad);
    for (const order of orders.filter((o) => o !== bad)) {
      const row = await rowOf(site.id, order);
      expect(row).toMatchObject({ status: "sent", last_error_code: null });
      expect(row.request_id).toEqual(expect.any(String));
    }
    // Google ingested every good row exactly once and never the bad one.
    const ingested = acceptedEvents().map((e) => e.transaction_id!).sort();
    expect(ingested).toEqual(orders.filter((o) => o !== bad).sort());

    await root().query("update app_public.offline_conversion_queue set sent_at = sent_at - interval '10 minutes' where site_id = $1", [site.id]);
    await deliver(site);
    for (const order of orders) expect((await rowOf(site.id, order)).status).toBe(order === bad ? "failed" : "accepted");
  });

  // Fails today: DataManagerRail keeps only the first accepted request's id (upload.requestId ??=), and
  // record_upload_outcomes stamps it on every row of the batch, so rows from the other requests of a
  // split batch are settled by the status of a request that did not carry them.
  test("each sent row carries the request id of the request that carried it (so its status check is about that row)", async () => {
    const site = await createDeliverySite("datamanager");
    const orders: string[] = [];
    for (let i = 0; i < 5; i++) orders.push(await confirmSale(site.id));
    dm.behave({ rejectEvent: (event) => (event.transaction_id === orders[2] ? "INVALID_FORMAT" : undefined) });
    await deliver(site);
    // Isolating the bad row made Google accept the good ones in more than one request.
    expect(dm.accepted.length).toBeGreaterThan(1);

    const sent = (await queueRows(site.id)).filter((r) => r.status === "sent");
    expect(sent).toHaveLength(4);
    const rail = rails.railFor("datamanager") as DataManagerRail;
    const destination: Destination = { rail: "datamanager", customerId: CUSTOMER_ID, loginCustomerId: LOGIN_CUSTOMER_ID, conversionAction: CONVERSION_ACTION, refreshToken: site.refreshToken };
    // Google's status of each recorded request id counts the events it carried: as many as rows carry that id.
    const carried = new Map<string, number>();
    for (const row of sent) carried.set(row.request_id!, (carried.get(row.request_id!) ?? 0) + 1);
    const counted = new Map<string, number>();
    for (const requestId of carried.keys()) counted.set(requestId, (await rail.requestStatus(destination, requestId)).recordCount);
    expect(Object.fromEntries(carried)).toEqual(Object.fromEntries(counted));
  });

  test("PARTIAL_SUCCESS: Google does not say which rows failed, so they stay sent with the reasons recorded", async () => {
    const site = await createDeliverySite("datamanager");
    await confirmSale(site.id);
    await confirmSale(site.id);
    expect(await deliver(site)).toMatchObject({ sent: 2 });
    dm.behave({ processingErrors: { PROCESSING_ERROR_REASON_INVALID_GCLID: 1 } });
    await root().query("update app_public.offline_conversion_queue set sent_at = sent_at - interval '10 minutes' where site_id = $1", [site.id]);
    await deliver(site);
    for (const row of await queueRows(site.id)) {
      expect(row).toMatchObject({ status: "sent", last_error_code: "PARTIAL_SUCCESS", accepted_at: null });
      expect(row.last_error_message).toContain("PROCESSING_ERROR_REASON_INVALID_GCLID");
    }
  });

  test("UNAVAILABLE then success, and quota exhausted: the batch waits (1 min, 1 h) and is sent later", async () => {
    const site = await createDeliverySite("datamanager");
    await confirmSale(site.id);
    await confirmSale(site.id);
    dm.behave({ failNext: { code: grpcStatus.UNAVAILABLE, times: 1 } });
    let before = Date.now();
    expect(await deliver(site)).toMatchObject({ claimed: 2, retry: 2, sent: 0 });
    for (const row of await queueRows(site.id)) {
      expect(row).toMatchObject({ status: "pending", last_error_code: "UNAVAILABLE", request_id: null });
      expectRetryIn(row, 60, before);
    }

    await root().query("update app_public.offline_conversion_queue set retry_at = now() - interval '1 second' where site_id = $1", [site.id]);
    dm.behave({ failNext: { code: grpcStatus.RESOURCE_EXHAUSTED, times: 1 } });
    before = Date.now();
    expect(await deliver(site)).toMatchObject({ claimed: 2, retry: 2 });
    for (const row of await queueRows(site.id)) {
      expect(row).toMatchObject({ status: "pending", last_error_code: "RESOURCE_EXHAUSTED" });
      expectRetryIn(row, 3600, before);
    }

    await root().query("update app_public.offline_conversion_queue set retry_at = now() - interval '1 second' where site_id = $1", [site.id]);
    expect(await deliver(site)).toMatchObject({ claimed: 2, sent: 2 });
    expect((await queueRows(site.id)).map((r) => [r.status, r.attempts, r.last_error_code])).toEqual([["sent", 3, null], ["sent", 3, null]]);
    expect(dm.accepted).toHaveLength(1);
  });

  test("token revoked: needs_reauth, nothing ingested, rows pending with no attempt used", async () => {
    const site = await createDeliverySite("datamanager");
    await confirmSale(site.id);
    oauth.revoke(site.refreshToken);
    expect(await deliver(site)).toMatchObject({ skipped: "needs_reauth", claimed: 1 });
    expect(await destinationOf(site)).toMatchObject({ status: "needs_reauth", status_reason: "INVALID_GRANT" });
    expect(await queueRows(site.id)).toEqual([expect.objectContaining({ status: "pending", attempts: 0, locked_by: null, last_error_code: "INVALID_GRANT" })]);
    expect(dm.requests).toHaveLength(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Consent, retractions, conversions without identifiers

describe("the upload job", () => {
  test("a new sale brings forward an upload job waiting for a later retry, and a later request never pushes it back", async () => {
    const site = await createDeliverySite("google_ads");
    const key = `upload_conversions:google:${site.id}`;
    const runAt = async () => (await root().query("select run_at from graphile_worker.jobs where key = $1", [key])).rows[0].run_at as Date;
    await root().query("delete from graphile_worker._private_jobs where key = $1", [key]);
    await root().query("select app_private.enqueue_upload($1, 'google', now() + interval '6 hours')", [site.id]);
    expect((await runAt()).getTime()).toBeGreaterThan(Date.now() + 5 * HOUR);
    await confirmSale(site.id);
    expect((await runAt()).getTime()).toBeLessThanOrEqual(Date.now() + 1000);
    await root().query("select app_private.enqueue_upload($1, 'google', now() + interval '6 hours')", [site.id]);
    expect((await runAt()).getTime()).toBeLessThanOrEqual(Date.now() + 1000);
    expect((await root().query("select count(*)::int as n from graphile_worker.jobs where key = $1", [key])).rows[0].n).toBe(1);
  });
});

describe("consent, retractions and rows without identifiers", () => {
  test("consent denied (site requires consent, none given): no user identifiers reach either rail, the click id does", async () => {
    for (const rail of ["google_ads", "datamanager"] as const) {
      const site = await createDeliverySite(rail, { consentMode: "required" });
      const order = await confirmSale(site.id, { email: "someone@example.com", phone: "+905551112233" });
      const row = await rowOf(site.id, order);
      expect(row).toMatchObject({ ad_user_data: "denied", ad_personalization: "denied" });
      // The hashes are kept (for later, if consent is given), but must not travel.
      const { rows: [ids] } = await root().query(
        "select i.email_sha256, i.phone_sha256 from app_private.sale_identifiers i join app_public.sales s on s.site_id = i.site_id and s.id = i.sale_id where s.site_id = $1 and s.external_id = $2",
        [site.id, order]);
      expect(ids).toEqual({ email_sha256: sha256("someone@example.com"), phone_sha256: sha256("+905551112233") });

      const summary = await deliver(site);
      expect(summary).toMatchObject({ claimed: 1, failed: 0, retry: 0 });
      const wire = JSON.stringify([ads.requests.map((r) => r.request), dm.requests]);
      expect(wire).not.toContain(ids.email_sha256);
      expect(wire).not.toContain(ids.phone_sha256);
      if (rail === "google_ads") {
        const [conversion] = clickConversions();
        expect(conversion).toMatchObject({ order_id: order, gclid: `Cj0KCQ-${order}`, consent: { ad_user_data: "DENIED", ad_personalization: "DENIED" } });
        expect(conversion.user_identifiers ?? []).toEqual([]);
      } else {
        const [event] = acceptedEvents();
        expect(event).toMatchObject({ transaction_id: order, ad_identifiers: { gclid: `Cj0KCQ-${order}` },
          consent: { ad_user_data: "CONSENT_DENIED", ad_personalization: "CONSENT_DENIED" } });
        expect(event.user_data).toBeUndefined();
      }
      ads.requests.length = 0;
      dm.reset();
    }
  });

  test("a conversion with no click id and no consented identifiers stays pending with AWAITING_CLICK_ID and is never sent; a consented email alone is enough", async () => {
    const site = await createDeliverySite("google_ads");
    const bare = await confirmSale(site.id, { gclid: null });
    const deniedEmail = await confirmSale(site.id, { gclid: null, email: "denied@example.com", consent: { ad_user_data: "denied", ad_personalization: "denied" } });
    const emailOnly = await confirmSale(site.id, { gclid: null, email: "granted@example.com" });

    const before = Date.now();
    expect(await deliver(site)).toMatchObject({ claimed: 3, retry: 2, accepted: 1, failed: 0 });
    for (const order of [bare, deniedEmail]) {
      const row = await rowOf(site.id, order);
      expect(row).toMatchObject({ status: "pending", last_error_code: "AWAITING_CLICK_ID", click_id: null, sent_at: null, locked_by: null });
      expectRetryIn(row, 6 * 3600, before);
    }
    expect(await rowOf(site.id, emailOnly)).toMatchObject({ status: "accepted" });
    expect(await deliver(site)).toMatchObject({ claimed: 0 });
    expect(clickConversions()).toHaveLength(1);
    const sent = clickConversions();
    expect(sent.map((c) => c.order_id)).toEqual([emailOnly]);
    expect(sent[0].gclid).toBeUndefined();
    expect(sent[0].user_identifiers).toEqual([{ user_identifier_source: "FIRST_PARTY", hashed_email: sha256("granted@example.com") }]);
  });

  test("a conversion that found no identifier within 7 days fails with NO_IDENTIFIER instead of waiting for ever", async () => {
    const site = await createDeliverySite("datamanager");
    const old = await confirmSale(site.id, { gclid: null, occurredAt: wholeSeconds(Date.now() - 8 * 24 * HOUR) });
    expect(await deliver(site)).toMatchObject({ claimed: 1, failed: 1 });
    expect(await rowOf(site.id, old)).toMatchObject({ status: "failed", last_error_code: "NO_IDENTIFIER" });
    expect(dm.requests).toHaveLength(0);
  });

  /** A call with a Google click id, as the superuser writes it; sealed with a value. Returns the call id and the order id of its conversion. */
  async function sealedCall(site: TestSite, gclid: string): Promise<{ callId: string; orderId: string }> {
    const { rows: [call] } = await root().query(
      `insert into app_public.calls (site_id, call_id, status, caller, tracking_number, started_at, duration_s, gclid,
                                     attribution_tier, attribution_source, click_id, click_id_type)
       values ($1, $2, 'ended', '+905551112233', '+902125550000', now() - interval '1 hour', 120, $3, 'S1', 'google_ads', $3, 'gclid')
       returning id`, [site.id, unique("call").replace(/[^A-Za-z0-9_.:-]/g, "_"), gclid]);
    const { rows: [action] } = await root().query("select * from app_public.seal_call($1, $2, 500)", [site.id, call.id]);
    const { rows: [sale] } = await root().query("select external_id from app_public.sales where site_id = $1 and id = $2", [site.id, action.sale_id]);
    return { callId: call.id, orderId: sale.external_id };
  }

  test("retraction on the Google Ads rail: undoing a delivered sealed call sends a RETRACTION adjustment by order id, and the retraction row is accepted", async () => {
    const site = await createDeliverySite("google_ads");
    const { callId, orderId } = await sealedCall(site, "Cj0KCQ-called");
    expect(await deliver(site)).toMatchObject({ claimed: 1, accepted: 1 });
    expect(clickConversions()).toEqual([expect.objectContaining({ order_id: orderId, gclid: "Cj0KCQ-called", conversion_value: 500, currency_code: "TRY" })]);

    await root().query("select app_public.undo_call_action($1, $2)", [site.id, callId]);
    expect(await rowOf(site.id, orderId, "retraction")).toMatchObject({ status: "pending" });

    const before = Date.now();
    expect(await deliver(site)).toMatchObject({ claimed: 1, accepted: 1, failed: 0 });
    const adjustments = ads.requests.filter((r) => r.method === "UploadConversionAdjustments");
    expect(adjustments).toHaveLength(1);
    expect(adjustments[0].request).toMatchObject({ customer_id: CUSTOMER_ID, partial_failure: true });
    expect(adjustments[0].request.conversion_adjustments).toEqual([{
      order_id: orderId, conversion_action: ACTION_NAME, adjustment_date_time: expect.stringMatching(GOOGLE_TIME), adjustment_type: "RETRACTION",
    }]);
    // The adjustment time is "now" in Istanbul.
    const adjusted = adjustments[0].request.conversion_adjustments[0].adjustment_date_time as string;
    const adjustedAt = Date.parse(adjusted.replace(" ", "T"));
    expect(Math.abs(adjustedAt - before)).toBeLessThan(10_000);

    const retraction = await rowOf(site.id, orderId, "retraction");
    expect(retraction).toMatchObject({ status: "accepted", last_error_code: null });
    expect(retraction.accepted_at).not.toBeNull();
    expect(await rowOf(site.id, orderId)).toMatchObject({ status: "accepted" });
    // No second click conversion went out for it.
    expect(clickConversions()).toHaveLength(1);
  });

  test("a call through a Google forwarding number (the provider says so) goes as a call conversion: caller and call start; TOO_RECENT_CALL waits 12 h", async () => {
    const site = await createDeliverySite("google_ads");
    const providerCallId = unique("fwd").replace(/[^A-Za-z0-9_.:-]/g, "_");
    const event = { call_id: providerCallId, status: "answered", caller: "+905559998877", tracking_number: "+908501112233",
      started_at: new Date(Date.now() - 2 * HOUR).toISOString(), duration_s: 95 };
    await expect(root().query("select app_private.record_call_event($1, $2::jsonb)", [site.id, JSON.stringify({ ...event, google_forwarding: "yes" })]))
      .rejects.toMatchObject({ code: "OMCAL" });
    await root().query("select app_private.record_call_event($1, $2::jsonb)", [site.id, JSON.stringify({ ...event, google_forwarding: true })]);
    const { rows: [call] } = await root().query(
      "select id, via_google_forwarding from app_public.calls where site_id = $1 and call_id = $2", [site.id, providerCallId]);
    expect(call.via_google_forwarding).toBe(true);
    await root().query("select app_public.seal_call($1, $2, 750)", [site.id, call.id]);

    ads.behave({ rowError: (_row, method) => (method === "UploadCallConversions"
      ? { category: "conversion_upload_error", code: "TOO_RECENT_CALL", message: "The call is too recent." } : undefined) });
    const before = Date.now();
    expect(await deliver(site)).toMatchObject({ claimed: 1, retry: 1, accepted: 0 });
    const calls = ads.requests.filter((r) => r.method === "UploadCallConversions");
    expect(calls).toHaveLength(1);
    expect(calls[0].request.conversions).toEqual([expect.objectContaining({
      caller_id: "+905559998877", call_start_date_time: expect.stringMatching(GOOGLE_TIME), conversion_action: ACTION_NAME, conversion_value: 750,
    })]);
    expect(ads.requests.filter((r) => r.method === "UploadClickConversions")).toHaveLength(0);
    const { rows: [waiting] } = await root().query(
      "select status, last_error_code, retry_at from app_public.offline_conversion_queue where site_id = $1", [site.id]);
    expect(waiting).toMatchObject({ status: "pending", last_error_code: "TOO_RECENT_CALL" });
    expect(waiting.retry_at.getTime() - before).toBeGreaterThan(12 * HOUR - 60_000);

    ads.behave({});
    await root().query("update app_public.offline_conversion_queue set retry_at = now() - interval '1 second' where site_id = $1", [site.id]);
    expect(await deliver(site)).toMatchObject({ claimed: 1, accepted: 1 });
  });

  test("undoing a sale that went to Google Ads as a call conversion: its retraction fails RETRACTION_UNSUPPORTED at once, nothing doomed is sent", async () => {
    const site = await createDeliverySite("google_ads");
    const callId = await forwardedCallSale(site, "+905559998855");
    expect(await deliver(site)).toMatchObject({ claimed: 1, accepted: 1 });
    expect(ads.requests.map((r) => r.method)).toEqual(["UploadCallConversions"]);

    await root().query("select app_public.undo_call_action($1, $2)", [site.id, callId]);
    expect(await deliver(site)).toMatchObject({ claimed: 1, failed: 1 });
    const { rows: [retraction] } = await root().query(
      "select status, last_error_code, last_error_message from app_public.offline_conversion_queue where site_id = $1 and kind = 'retraction'", [site.id]);
    expect(retraction).toMatchObject({ status: "failed", last_error_code: "RETRACTION_UNSUPPORTED" });
    expect(retraction.last_error_message).toMatch(/call conversion/);
    // An adjustment by order id would have found nothing: a call conversion has none.
    expect(ads.requests.map((r) => r.method)).toEqual(["UploadCallConversions"]);
  });

  test("on Data Manager, which cannot send calls, a forwarded call's sale with no click id, email or phone waits for a click id like any other", async () => {
    const site = await createDeliverySite("datamanager");
    // Consent for ad_user_data granted: the caller would be usable, were there a rail to carry it.
    await forwardedCallSale(site, "+905559998866");

    expect(await deliver(site)).toMatchObject({ claimed: 1, retry: 1, failed: 0, sent: 0 });
    const { rows: [row] } = await root().query("select status, last_error_code from app_public.offline_conversion_queue where site_id = $1", [site.id]);
    // Before migration 000040: failed, INVALID_NO_IDENTIFIERS, for good.
    expect(row).toEqual({ status: "pending", last_error_code: "AWAITING_CLICK_ID" });
    expect(dm.requests).toHaveLength(0);
  });

  describe("undo while the conversion is in flight (claimed by another uploader)", () => {
    /** Google Ads as it behaves for adjustments: an order id it does not have yet cannot be retracted. */
    function googleKnowsOnlyUploadedOrders(): Set<string> {
      const uploaded = new Set<string>();
      ads.behave({
        rowError: (row, method) => {
          if (method === "UploadClickConversions") uploaded.add(row.order_id);
          if (method === "UploadConversionAdjustments" && !uploaded.has(row.order_id)) {
            return { category: "conversion_adjustment_upload_error", code: "CONVERSION_NOT_FOUND", message: "The conversion can't be found." };
          }
          return undefined;
        },
      });
      return uploaded;
    }

    async function claimAs(site: TestSite, worker: string): Promise<{ id: string }[]> {
      const { rows } = await owner.query<{ id: string }>(
        "select id from app_private.claim_offline_conversion_jobs('google', 2000, $1, $2, 300)", [site.id, worker]);
      return rows;
    }

    test("undone while the upload loop's own batch is at Google: the undo waits for the outcome, then retracts what Google took", async () => {
      const site = await createDeliverySite("google_ads");
      const { callId, orderId } = await sealedCall(site, "Cj0KCQ-held");
      ads.behave({ latencyMs: 1000 });
      const delivery = deliver(site);
      await untilAdsReceived(1);

      let undone = false;
      const undo = root().query("select app_public.undo_call_action($1, $2)", [site.id, callId]).then(() => { undone = true; });
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(undone).toBe(false); // waiting for the batch's transaction
      expect(await delivery).toMatchObject({ claimed: 1, accepted: 1 });
      await undo;

      expect(await rowOf(site.id, orderId)).toMatchObject({ status: "accepted" });
      expect(await rowOf(site.id, orderId, "retraction")).toMatchObject({ status: "pending" });
      ads.behave({});
      expect(await deliver(site)).toMatchObject({ claimed: 1, accepted: 1 });
      expect(ads.requests.map((r) => r.method)).toEqual(["UploadClickConversions", "UploadConversionAdjustments"]);
      expect(await rowOf(site.id, orderId, "retraction")).toMatchObject({ status: "accepted" });
    });

    // Fails today: withdraw_conversion queues a retraction for a conversion still 'processing', and
    // claim_offline_conversion_jobs hands it out at once; Google does not have the order yet
    // (CONVERSION_NOT_FOUND, final), and the conversion then lands unretracted.
    test("the retraction does not overtake its conversion: Google's last word on the order id is RETRACTION", async () => {
      const site = await createDeliverySite("google_ads");
      const uploaded = googleKnowsOnlyUploadedOrders();
      const { callId, orderId } = await sealedCall(site, "Cj0KCQ-inflight");
      const claimed = await claimAs(site, "slow-worker");
      expect(claimed).toHaveLength(1);

      // Staff undo the call while the slow uploader is still talking to Google.
      await root().query("select app_public.undo_call_action($1, $2)", [site.id, callId]);
      expect(await rowOf(site.id, orderId, "retraction")).toMatchObject({ status: "pending" });
      await deliver(site);

      // The slow uploader's upload goes through and is recorded.
      const { rows: [payload] } = await owner.query("select * from app_private.conversion_payloads($1, $2::uuid[])", [site.id, [claimed[0].id]]);
      const destination: Destination = { rail: "google_ads", customerId: CUSTOMER_ID, conversionAction: CONVERSION_ACTION, refreshToken: site.refreshToken };
      const outcome = await rails.railFor("google_ads").uploadConversions(destination, [{
        rowId: payload.id, orderId: payload.order_id, clickId: { type: "gclid", value: payload.click_id }, conversionTime: payload.conversion_time,
        value: payload.value, currency: payload.currency, consent: { adUserData: payload.ad_user_data, adPersonalization: payload.ad_personalization },
      }]);
      expect(outcome).toEqual({ kind: "rows", rows: [{ kind: "accepted" }] });
      const { rows: [{ changed }] } = await owner.query("select app_private.record_upload_outcomes($1, 'slow-worker', $2::jsonb) as changed",
        [site.id, JSON.stringify([{ id: claimed[0].id, kind: "accepted" }])]);
      expect(changed).toBe(1);
      expect(uploaded.has(orderId)).toBe(true);

      // Whatever runs next, the undone sale must end retracted at Google.
      await root().query("update app_public.offline_conversion_queue set retry_at = now() - interval '1 second' where site_id = $1 and status = 'pending'", [site.id]);
      await deliver(site);
      const calls = ads.requests.map((r) => r.method);
      expect(calls.lastIndexOf("UploadConversionAdjustments")).toBeGreaterThan(calls.lastIndexOf("UploadClickConversions"));
      expect(await rowOf(site.id, orderId, "retraction")).toMatchObject({ status: "accepted" });
    });

    // Fails today: record_upload_outcomes turns the in-flight row back to 'pending' although its sale
    // is cancelled, and the next run uploads it (then retracts it; on Data Manager it stays).
    test("a conversion undone in flight that Google did not take (transient error) is not uploaded afterwards", async () => {
      const site = await createDeliverySite("google_ads");
      const { callId, orderId } = await sealedCall(site, "Cj0KCQ-inflight-2");
      const claimed = await claimAs(site, "slow-worker");
      await root().query("select app_public.undo_call_action($1, $2)", [site.id, callId]);
      const { rows: [{ status }] } = await root().query(
        "select s.status from app_public.sales s where s.site_id = $1 and s.external_id = $2", [site.id, orderId]);
      expect(status).toBe("cancelled");

      // The slow uploader was refused for quota: Google answered, nothing was delivered, it records a retry.
      await owner.query("select app_private.record_upload_outcomes($1, 'slow-worker', $2::jsonb)",
        [site.id, JSON.stringify([{ id: claimed[0].id, kind: "retry", code: "RESOURCE_EXHAUSTED", retry_after_seconds: 60 }])]);
      await root().query("update app_public.offline_conversion_queue set retry_at = now() - interval '1 second' where site_id = $1 and status = 'pending'", [site.id]);
      await deliver(site);

      // The sale was undone before Google had it: its conversion must never be uploaded, nor retracted.
      expect(clickConversions().map((c) => c.order_id)).not.toContain(orderId);
      expect((await rowOf(site.id, orderId)).status).toBe("cancelled");
      expect(await rowOf(site.id, orderId, "retraction")).toMatchObject({ status: "cancelled", last_error_code: "NOTHING_TO_RETRACT" });
      expect(ads.requests.map((r) => r.method)).not.toContain("UploadConversionAdjustments");
    });

    test("a conversion undone in flight whose upload ended without an answer (timeout) is retracted: Google may have it", async () => {
      const site = await createDeliverySite("google_ads");
      const { callId, orderId } = await sealedCall(site, "Cj0KCQ-inflight-3");
      const claimed = await claimAs(site, "slow-worker");
      await root().query("select app_public.undo_call_action($1, $2)", [site.id, callId]);

      // The slow uploader's call timed out: Google may or may not have processed it.
      await owner.query("select app_private.record_upload_outcomes($1, 'slow-worker', $2::jsonb)",
        [site.id, JSON.stringify([{ id: claimed[0].id, kind: "retry", code: "DEADLINE_EXCEEDED", retry_after_seconds: 60 }])]);
      expect(await rowOf(site.id, orderId)).toMatchObject({ status: "cancelled", last_error_code: "SALE_UNDONE" });
      // Before migration 000052 the retraction was dropped as needless here.
      expect(await rowOf(site.id, orderId, "retraction")).toMatchObject({ status: "pending" });
      await deliver(site);
      expect(clickConversions().map((c) => c.order_id)).not.toContain(orderId);
      expect(await rowOf(site.id, orderId, "retraction")).toMatchObject({ status: "accepted" });
    });
  });

  test("retraction on the Data Manager rail: the row fails with RETRACTION_UNSUPPORTED and nothing is sent for it", async () => {
    const site = await createDeliverySite("datamanager");
    const { callId, orderId } = await sealedCall(site, "Cj0KCQ-dm-called");
    expect(await deliver(site)).toMatchObject({ claimed: 1, sent: 1 });
    expect(acceptedEvents()).toEqual([expect.objectContaining({ transaction_id: orderId, ad_identifiers: { gclid: "Cj0KCQ-dm-called" } })]);

    await root().query("select app_public.undo_call_action($1, $2)", [site.id, callId]);
    expect(await deliver(site)).toMatchObject({ claimed: 1, failed: 1, sent: 0 });
    const retraction = await rowOf(site.id, orderId, "retraction");
    expect(retraction).toMatchObject({ status: "failed", last_error_code: "RETRACTION_UNSUPPORTED", locked_by: null });
    expect(retraction.last_error_message).toMatch(/retract/i);
    expect(dm.requests).toHaveLength(1);
  });
});

// ---------------------------------------------------------------------------------------------
// Google refusing the destination, not the rows

describe("destination-level refusals", () => {
  const refusals: { name: string; rail: Rail; code: string; refuse(): void; behaveAgain(): void }[] = [
    {
      name: "Google Ads: CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE for the whole request",
      rail: "google_ads",
      code: "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE",
      refuse: () => ads.behave({ callError: { status: grpcStatus.PERMISSION_DENIED, category: "not_allowlisted_error", code: "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE" } }),
      behaveAgain: () => ads.behave({}),
    },
    {
      name: "Data Manager: PERMISSION_DENIED",
      rail: "datamanager",
      code: "PERMISSION_DENIED",
      refuse: () => dm.behave({ failNext: { code: grpcStatus.PERMISSION_DENIED, times: 1 } }),
      behaveAgain: () => undefined, // the one refusal is spent
    },
    {
      name: "Data Manager: INVALID_CONVERSION_ACTION_ID",
      rail: "datamanager",
      code: "INVALID_CONVERSION_ACTION_ID",
      refuse: () => dm.behave({ rejectEvent: () => "INVALID_CONVERSION_ACTION_ID" }),
      behaveAgain: () => dm.behave({ rejectEvent: undefined }),
    },
  ];

  test.each(refusals)("$name: no row fails, the destination needs a person with Google's code, one request only; set active again, every row goes once",
    async ({ rail, code, refuse, behaveAgain }) => {
      const site = await createDeliverySite(rail);
      const orders: string[] = [];
      for (let i = 0; i < 5; i++) orders.push(await confirmSale(site.id));
      const deliverInTwos = () => deliverSiteConversions({ owner, vault, rails, batchSize: 2 }, site.id);
      const requests = () => (rail === "google_ads" ? ads.requests.length : dm.requests.length);

      refuse();
      expect(await deliverInTwos()).toMatchObject({ skipped: "needs_reauth", accepted: 0, sent: 0, retry: 0, failed: 0 });
      expect(await destinationOf(site)).toMatchObject({ status: "needs_reauth", status_reason: code });
      const rows = await queueRows(site.id);
      expect(rows).toHaveLength(5);
      for (const row of rows) {
        expect(row).toMatchObject({ status: "pending", attempts: 0, locked_by: null, locked_until: null, sent_at: null, accepted_at: null });
        // Rows of the refused batch (and of one locked ahead of it) carry the refusal; the rest were never touched.
        expect([code, null]).toContain(row.last_error_code);
        expect(row.retry_at.getTime()).toBeLessThanOrEqual(Date.now() + 1000);
      }
      // The first request was refused and the loop stopped there: no later batch was sent.
      expect(requests()).toBe(1);
      expect(await deliverInTwos()).toMatchObject({ skipped: "needs_reauth", claimed: 0 });
      expect(requests()).toBe(1);

      // A person fixes it at Google and sets the destination active again.
      behaveAgain();
      ads.requests.length = 0;
      dm.reset();
      expect((await root().query("select status, status_reason from app_public.set_destination_status($1, 'active')", [site.destinationId])).rows)
        .toEqual([{ status: "active", status_reason: null }]);
      expect(await deliverInTwos()).toMatchObject({ claimed: 5, failed: 0, retry: 0, [rail === "google_ads" ? "accepted" : "sent"]: 5 });
      const delivered = rail === "google_ads" ? clickConversions().map((c) => c.order_id) : acceptedEvents().map((e) => e.transaction_id);
      expect(delivered.sort()).toEqual([...orders].sort());
      for (const row of await queueRows(site.id)) {
        expect(row).toMatchObject({ status: rail === "google_ads" ? "accepted" : "sent", attempts: 1, last_error_code: null, locked_by: null });
      }
    });

  test("a refusal of credentials replaced while the run was under way leaves the new ones alone", async () => {
    const site = await createDeliverySite("google_ads");
    await confirmSale(site.id);
    // Google takes its time, then refuses the grant the run started with.
    ads.behave({ latencyMs: 1000, callError: { status: grpcStatus.UNAUTHENTICATED, category: "authentication_error", code: "OAUTH_TOKEN_REVOKED" } });
    const run = deliver(site);
    await untilAdsReceived(1);
    // Meanwhile a person sets new credentials.
    const newToken = `1//${unique("replaced")}`;
    oauth.grant(newToken);
    await storeRefreshToken((text, values) => root().query(text, values), vault, site.destinationId, newToken);
    expect(await run).toMatchObject({ skipped: "needs_reauth" });
    // The refusal was about the old grant: the destination stays active with the new one.
    expect(await destinationOf(site)).toMatchObject({ status: "active", status_reason: null, credentials_last4: newToken.slice(-4) });

    ads.behave({});
    expect(await deliver(site)).toMatchObject({ claimed: 1, accepted: 1 });
  });

  test("our developer token refused (shared by every destination): the rows wait an hour, the destination stays active and needs nobody", async () => {
    const site = await createDeliverySite("google_ads");
    const orders = [await confirmSale(site.id), await confirmSale(site.id)];
    ads.behave({ callError: { status: grpcStatus.PERMISSION_DENIED, category: "authorization_error", code: "DEVELOPER_TOKEN_NOT_APPROVED" } });
    const before = Date.now();
    expect(await deliver(site)).toMatchObject({ claimed: 2, retry: 2, failed: 0 });
    expect(await destinationOf(site)).toMatchObject({ status: "active" });
    for (const order of orders) {
      const row = await rowOf(site.id, order);
      expect(row).toMatchObject({ status: "pending", last_error_code: "DEVELOPER_TOKEN_NOT_APPROVED" });
      expect(row.retry_at.getTime() - before).toBeGreaterThan(HOUR - MINUTE);
    }
    // The operator fixes the token; when the hour is up the rows go by themselves.
    ads.behave({});
    await root().query("update app_public.offline_conversion_queue set retry_at = now() - interval '1 second' where site_id = $1", [site.id]);
    expect(await deliver(site)).toMatchObject({ claimed: 2, accepted: 2 });
  });
});
