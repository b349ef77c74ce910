/*
 * The Google Ads API rail through the real client library (google-ads-node's gRPC clients)
 * against a loopback fake built from the same API's .proto files, with access tokens from the
 * OAuth fake. Assertions look at what reached the fake (decoded requests and metadata) as well
 * as at the outcome the rail reports for each row.
 */
import { createHash } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { GoogleAdsRail } from "../src/google/google-ads";
import { AccessTokens } from "../src/google/oauth";
import type { Conversion, Destination, GoogleSettings } from "../src/google/types";
import { FakeError, GoogleAdsFake, startGoogleAdsFake } from "./fakes/google/google-ads-fake";
import { OAuthFake, startOAuthFake } from "./fakes/google/oauth-fake";

const DEVELOPER_TOKEN = "dev-token-opsmantik";
const ACTION = "customers/1234567890/conversionActions/777001";

let oauth: OAuthFake;
let ads: GoogleAdsFake;
let tokens: AccessTokens;
let rail: GoogleAdsRail;
let accessToken: string;

const destination: Destination = {
  rail: "google_ads",
  customerId: "1234567890",
  loginCustomerId: "9876543210",
  conversionAction: "777001",
  refreshToken: "1//refresh-main",
};

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

function settings(overrides: Partial<GoogleSettings> = {}): GoogleSettings {
  return {
    developerToken: DEVELOPER_TOKEN,
    clientId: "client-id",
    clientSecret: "client-secret",
    googleAdsEndpoint: ads.endpoint,
    insecure: true,
    oauthTokenUrl: oauth.url,
    ...overrides,
  };
}

function conversion(orderId: string, overrides: Partial<Conversion> = {}): Conversion {
  return {
    rowId: `row-${orderId}`,
    orderId,
    clickId: { type: "gclid", value: `Cj0KCQ-${orderId}` },
    conversionTime: "2026-03-01 14:05:00+03:00",
    value: "1250.50",
    currency: "TRY",
    emailSha256: sha256("ayse@example.com"),
    phoneSha256: sha256("+905321234567"),
    consent: { adUserData: "granted", adPersonalization: "denied" },
    ...overrides,
  };
}

function callConversion(orderId: string, callerId: string): Conversion {
  return conversion(orderId, { clickId: undefined, call: { callerId, callStartTime: "2026-03-01 13:50:00+03:00" } });
}

beforeAll(async () => {
  oauth = await startOAuthFake();
  ads = await startGoogleAdsFake({ developerToken: DEVELOPER_TOKEN, isValidAccessToken: oauth.isValidAccessToken });
  accessToken = oauth.grant(destination.refreshToken);
  tokens = new AccessTokens(settings());
  rail = new GoogleAdsRail(settings(), tokens);
});

afterAll(async () => {
  await rail?.close();
  await ads?.close();
  await oauth?.close();
});

beforeEach(() => {
  ads.behave({});
  ads.requests.length = 0;
});

test("accepted conversions reach Google with action, click id, time, value, currency, order id, consent, hashes and headers", async () => {
  const outcome = await rail.uploadConversions(destination, [
    conversion("order-1"),
    conversion("order-2", { clickId: { type: "wbraid", value: "wbraid-2" }, value: "99" }),
  ]);

  expect(outcome).toEqual({ kind: "rows", rows: [{ kind: "accepted" }, { kind: "accepted" }] });
  expect(ads.requests).toHaveLength(1);
  const [{ method, request, metadata }] = ads.requests;
  expect(method).toBe("UploadClickConversions");
  expect(request.customer_id).toBe("1234567890");
  expect(request.partial_failure).toBe(true);
  expect(request.conversions[0]).toEqual({
    gclid: "Cj0KCQ-order-1",
    conversion_action: ACTION,
    conversion_date_time: "2026-03-01 14:05:00+03:00",
    conversion_value: 1250.5,
    currency_code: "TRY",
    order_id: "order-1",
    consent: { ad_user_data: "GRANTED", ad_personalization: "DENIED" },
    user_identifiers: [
      { user_identifier_source: "FIRST_PARTY", hashed_email: sha256("ayse@example.com") },
      { user_identifier_source: "FIRST_PARTY", hashed_phone_number: sha256("+905321234567") },
    ],
  });
  expect(request.conversions[1]).toMatchObject({ wbraid: "wbraid-2", conversion_value: 99, order_id: "order-2" });
  expect(request.conversions[1].gclid).toBeUndefined();
  expect(metadata).toMatchObject({
    authorization: `Bearer ${accessToken}`,
    "developer-token": DEVELOPER_TOKEN,
    "login-customer-id": "9876543210",
  });
});

test("a partial failure gives each row its own outcome, calls and clicks mapped back to their places in the batch", async () => {
  const errors: Record<string, FakeError> = {
    "order-too-recent": { category: "conversion_upload_error", code: "TOO_RECENT_EVENT" },
    "order-exists": { category: "conversion_upload_error", code: "CLICK_CONVERSION_ALREADY_EXISTS" },
    "order-in-use": { category: "conversion_upload_error", code: "ORDER_ID_ALREADY_IN_USE" },
    "order-transient": { category: "internal_error", code: "TRANSIENT_ERROR" },
    "order-bad-gclid": { category: "conversion_upload_error", code: "UNPARSEABLE_GCLID", message: "The gclid could not be decoded." },
    "order-not-allowlisted": { category: "not_allowlisted_error", code: "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE", message: "Not allowlisted." },
    "+905550000001": { category: "conversion_upload_error", code: "TOO_RECENT_CALL" },
  };
  ads.behave({ rowError: (row) => errors[row.order_id ?? row.caller_id] });

  const outcome = await rail.uploadConversions(destination, [
    conversion("order-ok"),
    conversion("order-too-recent"),
    callConversion("order-call-recent", "+905550000001"),
    conversion("order-exists"),
    conversion("order-in-use"),
    callConversion("order-call-ok", "+905550000002"),
    conversion("order-transient"),
    conversion("order-bad-gclid"),
    conversion("order-not-allowlisted"),
  ]);

  expect(outcome).toEqual({
    kind: "rows",
    rows: [
      { kind: "accepted" },
      { kind: "retry", code: "TOO_RECENT_EVENT", retryAfterSeconds: 21600 },
      { kind: "retry", code: "TOO_RECENT_CALL", retryAfterSeconds: 43200 },
      { kind: "accepted", code: "CLICK_CONVERSION_ALREADY_EXISTS" },
      { kind: "accepted", code: "ORDER_ID_ALREADY_IN_USE" },
      { kind: "accepted" },
      { kind: "retry", code: "TRANSIENT_ERROR", retryAfterSeconds: expect.any(Number) },
      { kind: "failed", code: "UNPARSEABLE_GCLID", message: "The gclid could not be decoded." },
      { kind: "failed", code: "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE", message: "Not allowlisted." },
    ],
  });
  const transient = outcome.kind === "rows" ? outcome.rows[6] : undefined;
  expect(transient?.kind === "retry" && transient.retryAfterSeconds).toBeLessThan(21600);

  expect(ads.requests.map((r) => [r.method, r.request.conversions.length])).toEqual([
    ["UploadClickConversions", 7],
    ["UploadCallConversions", 2],
  ]);
  const calls = ads.requests[1].request;
  expect(calls.partial_failure).toBe(true);
  expect(calls.conversions[0]).toEqual({
    caller_id: "+905550000001",
    call_start_date_time: "2026-03-01 13:50:00+03:00",
    conversion_action: ACTION,
    conversion_date_time: "2026-03-01 14:05:00+03:00",
    conversion_value: 1250.5,
    currency_code: "TRY",
    consent: { ad_user_data: "GRANTED", ad_personalization: "DENIED" },
  });
});

test("UNAVAILABLE makes the batch wait, without the library retrying on its own; the next attempt succeeds", async () => {
  ads.behave({ unavailableCalls: 1 });

  const first = await rail.uploadConversions(destination, [conversion("order-1")]);
  expect(first).toEqual({ kind: "retry_batch", code: "UNAVAILABLE", retryAfterSeconds: expect.any(Number) });
  expect(ads.requests).toHaveLength(1);

  const second = await rail.uploadConversions(destination, [conversion("order-1")]);
  expect(second).toEqual({ kind: "rows", rows: [{ kind: "accepted" }] });
  expect(ads.requests).toHaveLength(2);
});

test("a call slower than the timeout ends with DEADLINE_EXCEEDED and one request", async () => {
  const impatient = new GoogleAdsRail(settings(), tokens, { callTimeoutMs: 150 });
  try {
    ads.behave({ latencyMs: 600 });
    const outcome = await impatient.uploadConversions(destination, [conversion("order-1")]);
    expect(outcome).toEqual({ kind: "retry_batch", code: "DEADLINE_EXCEEDED", retryAfterSeconds: expect.any(Number) });
    expect(ads.requests).toHaveLength(1);
  } finally {
    await impatient.close();
  }
});

test("exhausted quota makes the batch wait long: Google's retry delay when given, an hour at least otherwise", async () => {
  ads.behave({ quotaExhausted: { retryDelaySeconds: 5400 } });
  expect(await rail.uploadConversions(destination, [conversion("order-1")])).toEqual({
    kind: "retry_batch",
    code: "RESOURCE_EXHAUSTED",
    retryAfterSeconds: 5400,
  });

  ads.behave({ quotaExhausted: {} });
  const outcome = await rail.uploadConversions(destination, [conversion("order-1")]);
  expect(outcome).toMatchObject({ kind: "retry_batch", code: "RESOURCE_EXHAUSTED" });
  expect(outcome.kind === "retry_batch" && outcome.retryAfterSeconds).toBeGreaterThanOrEqual(3600);
});

test("a token Google says is revoked asks for reauthorisation after one try with a fresh token", async () => {
  ads.behave({ tokenRevoked: true });
  const refreshesBefore = oauth.requests;

  expect(await rail.uploadConversions(destination, [conversion("order-1")])).toEqual({ kind: "reauth", code: "OAUTH_TOKEN_REVOKED" });
  expect(ads.requests).toHaveLength(2);
  expect(oauth.requests).toBe(refreshesBefore + 1);
});

test("a grant revoked at the OAuth server asks for reauthorisation; an uncached one sends nothing", async () => {
  // Cached access token: Google refuses it, the refresh answers invalid_grant.
  const cached: Destination = { ...destination, refreshToken: "1//refresh-cached" };
  oauth.grant(cached.refreshToken);
  expect(await rail.uploadConversions(cached, [conversion("order-1")])).toEqual({ kind: "rows", rows: [{ kind: "accepted" }] });
  oauth.revoke(cached.refreshToken);
  expect(await rail.uploadConversions(cached, [conversion("order-2")])).toEqual({ kind: "reauth", code: "INVALID_GRANT" });
  expect(ads.requests).toHaveLength(2);

  // Never used: no access token at all, so no request reaches the API.
  ads.requests.length = 0;
  const revoked: Destination = { ...destination, refreshToken: "1//refresh-revoked" };
  oauth.grant(revoked.refreshToken);
  oauth.revoke(revoked.refreshToken);
  expect(await rail.uploadConversions(revoked, [conversion("order-3")])).toEqual({ kind: "reauth", code: "INVALID_GRANT" });
  expect(await rail.retractConversions(revoked, [{ rowId: "r", orderId: "order-3", adjustmentTime: "2026-03-02 10:00:00+03:00" }])).toEqual({
    kind: "reauth",
    code: "INVALID_GRANT",
  });
  expect(ads.requests).toHaveLength(0);
});

test("a request refused for the destination (not allowlisted, no conversion action, terms) is handed back whole with Google's code", async () => {
  const refusals: (FakeError & { status: status })[] = [
    { status: status.PERMISSION_DENIED, category: "not_allowlisted_error", code: "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE", message: "Customer is not allowlisted for this feature." },
    { status: status.INVALID_ARGUMENT, category: "conversion_upload_error", code: "NO_CONVERSION_ACTION_FOUND", message: "The conversion action cannot be found." },
    { status: status.INVALID_ARGUMENT, category: "conversion_upload_error", code: "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS", message: "Customer data terms not accepted." },
    // An authorisation code we do not list: Google's PERMISSION_DENIED says it is about who asks.
    { status: status.PERMISSION_DENIED, category: "authorization_error", code: "METRIC_ACCESS_DENIED", message: "Access denied." },
  ];
  for (const refusal of refusals) {
    ads.behave({ callError: refusal });
    ads.requests.length = 0;
    const refreshesBefore = oauth.requests;
    // Clicks go first: refused, so the calls of the batch are not sent at all.
    expect(await rail.uploadConversions(destination, [conversion("order-1"), callConversion("order-2", "+905550000003")])).toEqual({
      kind: "reauth",
      code: refusal.code,
    });
    expect(ads.requests.map((r) => r.method)).toEqual(["UploadClickConversions"]);
    // Not the access token's fault: no fresh token, no second request.
    expect(oauth.requests).toBe(refreshesBefore);
  }

  ads.behave({ callError: refusals[2] });
  expect(await rail.retractConversions(destination, [{ rowId: "r", orderId: "order-1", adjustmentTime: "2026-03-02 10:00:00+03:00" }])).toEqual({
    kind: "reauth",
    code: "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS",
  });
});

test("a wrong developer token (ours, shared by every destination): the batch waits an hour with DEVELOPER_TOKEN_INVALID, after one request and no token refresh", async () => {
  const wrongToken = new GoogleAdsRail(settings({ developerToken: "not-ours" }), tokens);
  try {
    const refreshesBefore = oauth.requests;
    expect(await wrongToken.uploadConversions(destination, [conversion("order-1")]))
      .toEqual({ kind: "retry_batch", code: "DEVELOPER_TOKEN_INVALID", retryAfterSeconds: 3600 });
    expect(ads.requests).toHaveLength(1);
    expect(oauth.requests).toBe(refreshesBefore);
  } finally {
    await wrongToken.close();
  }
});

test("a request-level error about neither the destination nor a wait still fails every row of the call with Google's code", async () => {
  ads.behave({
    callError: { status: status.INVALID_ARGUMENT, category: "conversion_upload_error", code: "TOO_MANY_CONVERSIONS_IN_REQUEST", message: "Too many conversions." },
  });
  const failed = { kind: "failed", code: "TOO_MANY_CONVERSIONS_IN_REQUEST", message: "Too many conversions." };
  expect(await rail.uploadConversions(destination, [conversion("order-1"), conversion("order-2")])).toEqual({ kind: "rows", rows: [failed, failed] });
});

test("refused for the destination after the batch's click conversions went through: those stay accepted, the calls wait an hour", async () => {
  ads.behave({
    callError: { status: status.PERMISSION_DENIED, category: "not_allowlisted_error", code: "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE", method: "UploadCallConversions" },
  });
  expect(await rail.uploadConversions(destination, [conversion("order-1"), callConversion("order-2", "+905550000004")])).toEqual({
    kind: "rows",
    rows: [{ kind: "accepted" }, { kind: "retry", code: "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE", retryAfterSeconds: 3600 }],
  });
  expect(ads.requests.map((r) => r.method)).toEqual(["UploadClickConversions", "UploadCallConversions"]);
});

test("without a failure trailer, PERMISSION_DENIED, NOT_FOUND and FAILED_PRECONDITION refuse the destination", async () => {
  for (const code of [status.PERMISSION_DENIED, status.NOT_FOUND, status.FAILED_PRECONDITION]) {
    ads.behave({ bareStatus: code });
    expect(await rail.uploadConversions(destination, [conversion("order-1"), conversion("order-2")])).toEqual({ kind: "reauth", code: status[code] });
  }
  expect(ads.requests).toHaveLength(3);
});

test("without a failure trailer, UNKNOWN, CANCELLED and ABORTED make the batch wait (as on Data Manager); then it goes in", async () => {
  for (const code of [status.UNKNOWN, status.CANCELLED, status.ABORTED]) {
    ads.behave({ bareStatus: code });
    expect(await rail.uploadConversions(destination, [conversion("order-1"), conversion("order-2")])).toEqual({
      kind: "retry_batch",
      code: status[code],
      retryAfterSeconds: 60,
    });
  }
  // One request each: the library did not retry on its own.
  expect(ads.requests).toHaveLength(3);

  ads.behave({});
  expect(await rail.uploadConversions(destination, [conversion("order-1")])).toEqual({ kind: "rows", rows: [{ kind: "accepted" }] });
});

test("without ad_user_data consent no hashed identifiers are sent, whatever the conversion carries", async () => {
  await rail.uploadConversions(destination, [
    conversion("order-denied", { consent: { adUserData: "denied", adPersonalization: "granted" } }),
    conversion("order-unspecified", { consent: { adUserData: "unspecified", adPersonalization: "unspecified" } }),
  ]);

  const [denied, unspecified] = ads.requests[0].request.conversions;
  expect(denied.user_identifiers).toBeUndefined();
  expect(denied.consent).toEqual({ ad_user_data: "DENIED", ad_personalization: "GRANTED" });
  expect(unspecified.user_identifiers).toBeUndefined();
  expect(unspecified.consent).toEqual({ ad_user_data: "UNSPECIFIED", ad_personalization: "UNSPECIFIED" });
});

test("a retraction goes through UploadConversionAdjustments as a RETRACTION by order id", async () => {
  const noManager: Destination = { ...destination, loginCustomerId: undefined };
  const errors: Record<string, FakeError> = {
    "order-retracted": { category: "conversion_adjustment_upload_error", code: "CONVERSION_ALREADY_RETRACTED" },
    "order-unknown": { category: "conversion_adjustment_upload_error", code: "CONVERSION_NOT_FOUND", message: "Conversion not found." },
  };
  ads.behave({ rowError: (row) => errors[row.order_id] });

  const outcome = await rail.retractConversions(noManager, [
    { rowId: "r1", orderId: "order-1", adjustmentTime: "2026-03-02 10:00:00+03:00" },
    { rowId: "r2", orderId: "order-retracted", adjustmentTime: "2026-03-02 10:00:00+03:00" },
    { rowId: "r3", orderId: "order-unknown", adjustmentTime: "2026-03-02 10:00:00+03:00" },
  ]);

  expect(outcome).toEqual({
    kind: "rows",
    rows: [
      { kind: "accepted" },
      { kind: "accepted", code: "CONVERSION_ALREADY_RETRACTED" },
      { kind: "failed", code: "CONVERSION_NOT_FOUND", message: "Conversion not found." },
    ],
  });
  expect(ads.requests).toHaveLength(1);
  const [{ method, request, metadata }] = ads.requests;
  expect(method).toBe("UploadConversionAdjustments");
  expect(request.partial_failure).toBe(true);
  expect(request.conversion_adjustments[0]).toEqual({
    order_id: "order-1",
    conversion_action: ACTION,
    adjustment_date_time: "2026-03-02 10:00:00+03:00",
    adjustment_type: "RETRACTION",
  });
  expect(metadata["login-customer-id"]).toBeUndefined();
  expect(metadata["developer-token"]).toBe(DEVELOPER_TOKEN);
});

test("plaintext gRPC is refused at construction unless the endpoint is loopback", async () => {
  expect(() => new GoogleAdsRail(settings({ googleAdsEndpoint: "203.0.113.7:443" }), tokens)).toThrow(/loopback/);
  expect(() => new GoogleAdsRail(settings({ googleAdsEndpoint: undefined }), tokens)).toThrow(/loopback/);
  for (const endpoint of ["localhost:50051", "[::1]:50051"]) {
    await new GoogleAdsRail(settings({ googleAdsEndpoint: endpoint }), tokens).close();
  }
});
