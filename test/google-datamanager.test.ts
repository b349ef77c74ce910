/*
 * The Data Manager rail through Google's real client library and real gRPC, against the loopback
 * fake built from the library's own protos, with tokens from the loopback OAuth fake. What the
 * fake received is checked field by field: that is what Google would see.
 */
import { createHash } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { DataManagerRail } from "../src/google/datamanager";
import { AccessTokens } from "../src/google/oauth";
import type { Conversion, Destination, GoogleSettings } from "../src/google/types";
import { startDataManagerFake, type DataManagerFake, type FakeIngestEventsRequest } from "./fakes/google/datamanager-fake";
import { startOAuthFake, type OAuthFake } from "./fakes/google/oauth-fake";

let oauth: OAuthFake;
let google: DataManagerFake;
let settings: GoogleSettings;
let rail: DataManagerRail;
/** Access tokens the fake Google treats as expired although the OAuth fake still honours them. */
const expired = new Set<string>();

beforeAll(async () => {
  oauth = await startOAuthFake();
  google = await startDataManagerFake({ isValidAccessToken: (token) => oauth.isValidAccessToken(token) && !expired.has(token) });
  settings = { insecure: true, dataManagerEndpoint: google.endpoint, oauthTokenUrl: oauth.url, clientId: "client", clientSecret: "secret" };
  rail = new DataManagerRail(settings, new AccessTokens(settings));
});

afterAll(async () => {
  await rail?.close();
  await google?.close();
  await oauth?.close();
});

beforeEach(() => google.reset());

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");
let destinations = 0;

/** A destination with its own, freshly granted refresh token. */
function destination(overrides: Partial<Destination> = {}): Destination {
  const refreshToken = `refresh-${++destinations}`;
  oauth.grant(refreshToken);
  return { rail: "datamanager", customerId: "1234567890", conversionAction: "987654321", refreshToken, ...overrides };
}

function conversion(n: number, overrides: Partial<Conversion> = {}): Conversion {
  return {
    rowId: `row-${n}`,
    orderId: `order-${n}`,
    clickId: { type: "gclid", value: `Cj0KCQiA-gclid_${n}` },
    conversionTime: "2025-03-01 14:05:00+03:00",
    value: "1250.00",
    currency: "TRY",
    emailSha256: sha256(`user${n}@example.com`),
    phoneSha256: sha256(`+90555000${n}`),
    consent: { adUserData: "granted", adPersonalization: "granted" },
    ...overrides,
  };
}

const batch = (size: number) => Array.from({ length: size }, (_, n) => conversion(n));
const transactionIds = (requests: FakeIngestEventsRequest[]) => requests.flatMap((r) => (r.events ?? []).map((e) => e.transaction_id));

test("a batch Google accepts: every field arrives as the protos define it", async () => {
  const dest = destination({ loginCustomerId: "1112223334" });
  const rows = [
    conversion(1),
    conversion(2, { clickId: { type: "gbraid", value: "0AAAAA-gbraid" }, phoneSha256: undefined, value: "0", currency: "EUR",
      conversionTime: "2024-02-29 23:59:59-05:30", consent: { adUserData: "granted", adPersonalization: "denied" } }),
    conversion(3, { clickId: { type: "wbraid", value: "wbraid.token" }, emailSha256: undefined, phoneSha256: undefined,
      consent: { adUserData: "granted", adPersonalization: "unspecified" } }),
  ];
  const outcome = await rail.uploadConversions(dest, rows);

  expect(outcome).toEqual({ kind: "rows", rows: [{ kind: "accepted", requestId: expect.any(String) }, { kind: "accepted", requestId: expect.any(String) }, { kind: "accepted", requestId: expect.any(String) }], requestId: expect.any(String) });
  expect(google.requests).toHaveLength(1);
  const [request] = google.requests;
  expect(request.destinations).toEqual([{
    operating_account: { account_type: "GOOGLE_ADS", account_id: "1234567890" },
    login_account: { account_type: "GOOGLE_ADS", account_id: "1112223334" },
    product_destination_id: "987654321",
  }]);
  expect(request.encoding).toBe("HEX");
  expect(request.validate_only).toBeUndefined();
  expect(request.events).toEqual([
    {
      transaction_id: "order-1",
      event_timestamp: { seconds: String(Date.parse("2025-03-01T14:05:00+03:00") / 1000), nanos: 0 },
      conversion_value: 1250,
      currency: "TRY",
      ad_identifiers: { gclid: "Cj0KCQiA-gclid_1" },
      user_data: { user_identifiers: [{ email_address: sha256("user1@example.com") }, { phone_number: sha256("+905550001") }] },
      consent: { ad_user_data: "CONSENT_GRANTED", ad_personalization: "CONSENT_GRANTED" },
    },
    {
      transaction_id: "order-2",
      event_timestamp: { seconds: String(Date.parse("2024-02-29T23:59:59-05:30") / 1000), nanos: 0 },
      conversion_value: 0,
      currency: "EUR",
      ad_identifiers: { gbraid: "0AAAAA-gbraid" },
      user_data: { user_identifiers: [{ email_address: sha256("user2@example.com") }] },
      consent: { ad_user_data: "CONSENT_GRANTED", ad_personalization: "CONSENT_DENIED" },
    },
    {
      transaction_id: "order-3",
      event_timestamp: { seconds: String(Date.parse("2025-03-01T14:05:00+03:00") / 1000), nanos: 0 },
      conversion_value: 1250,
      currency: "TRY",
      ad_identifiers: { wbraid: "wbraid.token" },
      consent: { ad_user_data: "CONSENT_GRANTED", ad_personalization: "CONSENT_STATUS_UNSPECIFIED" },
    },
  ]);
});

test("the request id from an upload gives Google's processing status", async () => {
  const dest = destination();
  const outcome = await rail.uploadConversions(dest, batch(4));
  if (outcome.kind !== "rows" || !outcome.requestId) throw new Error("expected a request id");
  expect(await rail.requestStatus(dest, outcome.requestId)).toEqual({ status: "SUCCESS", recordCount: 4, errors: {}, warnings: {} });

  google.behave({ processingErrors: { PROCESSING_ERROR_REASON_INVALID_GCLID: 1 } });
  expect(await rail.requestStatus(dest, outcome.requestId)).toEqual({
    status: "PARTIAL_SUCCESS", recordCount: 4, errors: { PROCESSING_ERROR_REASON_INVALID_GCLID: 1 }, warnings: {},
  });
  // Google will not report on an id it does not know: a verdict of ours, not an error to retry.
  expect(await rail.requestStatus(dest, "no-such-request")).toEqual({
    status: "REQUEST_REFUSED", recordCount: 0, errors: { INVALID_REQUEST_ID: 0 }, warnings: {},
  });
  google.behave({ failStatus: status.UNAVAILABLE });
  await expect(rail.requestStatus(dest, outcome.requestId)).rejects.toMatchObject({ code: status.UNAVAILABLE });
});

test("one row Google refuses in a batch of 50 is isolated by halving; the other 49 go in once each", async () => {
  google.behave({ rejectEvent: (event) => (event.transaction_id === "order-17" ? "INVALID_FORMAT" : undefined) });
  const outcome = await rail.uploadConversions(destination(), batch(50));

  if (outcome.kind !== "rows") throw new Error(`expected rows, got ${outcome.kind}`);
  expect(outcome.rows[17]).toEqual({ kind: "failed", code: "INVALID_FORMAT", message: expect.stringContaining("order-17") });
  expect(outcome.rows.filter((row) => row.kind === "accepted")).toHaveLength(49);
  expect(outcome.requestId).toEqual(expect.any(String));
  // Halving 50 rows down to one takes six levels of two requests, after the first.
  expect(google.requests.length).toBeLessThanOrEqual(1 + 2 * Math.ceil(Math.log2(50)));
  const accepted = transactionIds(google.accepted);
  expect(accepted).toHaveLength(49);
  expect(new Set(accepted).size).toBe(49);
  expect(accepted).not.toContain("order-17");
});

test("many bad rows: the requests stay bounded, and rows not isolated wait for a later batch", async () => {
  google.behave({ rejectEvent: (event) => (Number(event.transaction_id?.slice("order-".length)) % 2 === 0 ? "INVALID_FORMAT" : undefined) });
  const outcome = await rail.uploadConversions(destination(), batch(16));

  if (outcome.kind !== "rows") throw new Error(`expected rows, got ${outcome.kind}`);
  expect(google.requests.length).toBeLessThanOrEqual(1 + 4 * Math.log2(16));
  outcome.rows.forEach((row, n) => {
    if (n % 2 === 0) expect(row.kind).not.toBe("accepted");
    if (row.kind === "failed") expect(row.code).toBe("INVALID_FORMAT");
    if (row.kind === "retry") expect(row).toEqual({ kind: "retry", code: "INVALID_ARGUMENT_NOT_ISOLATED", retryAfterSeconds: 3600 });
  });
  expect(outcome.rows.filter((row) => row.kind === "retry").length).toBeGreaterThan(0);
});

test("a reason about the destination refuses the destination at once, without splitting: no row is failed", async () => {
  for (const reason of ["INVALID_CONVERSION_ACTION_ID", "TERMS_AND_CONDITIONS_NOT_SIGNED", "NOT_ALLOWLISTED"]) {
    google.reset();
    google.behave({ rejectEvent: () => reason });
    expect(await rail.uploadConversions(destination(), batch(20))).toEqual({ kind: "reauth", code: reason });
    expect(google.requests).toHaveLength(1);
  }
});

test("a destination Google could never take (customer id not ten digits) is refused before any token or request", async () => {
  const tokenRequests = oauth.requests;
  expect(await rail.uploadConversions(destination({ customerId: "123-456-7890" }), batch(3))).toEqual({ kind: "reauth", code: "INVALID_DESTINATION" });
  expect(google.requests).toHaveLength(0);
  expect(oauth.requests).toBe(tokenRequests);
});

test("UNAVAILABLE: the whole batch is retried later, and then goes in", async () => {
  const dest = destination();
  google.behave({ failNext: { code: status.UNAVAILABLE, times: 1 } });
  expect(await rail.uploadConversions(dest, batch(5))).toEqual({ kind: "retry_batch", code: "UNAVAILABLE", retryAfterSeconds: 60 });
  const second = await rail.uploadConversions(dest, batch(5));
  expect(second).toMatchObject({ kind: "rows", rows: Array(5).fill({ kind: "accepted" }) });
  expect(google.accepted).toHaveLength(1);
});

test("a transient failure while isolating a bad row keeps what was accepted and retries the rest", async () => {
  // Call 1 (10 rows) is refused for row 9, call 2 (rows 0-4) goes in, call 3 (rows 5-9) meets UNAVAILABLE.
  google.behave({
    rejectEvent: (event) => (event.transaction_id === "order-9" ? "INVALID_FORMAT" : undefined),
    failNext: { code: status.UNAVAILABLE, times: 1, after: 2 },
  });
  const outcome = await rail.uploadConversions(destination(), batch(10));
  expect(outcome).toEqual({
    kind: "rows",
    rows: [...Array(5).fill({ kind: "accepted", requestId: expect.any(String) }), ...Array(5).fill({ kind: "retry", code: "UNAVAILABLE", retryAfterSeconds: 60 })],
    requestId: expect.any(String),
  });
});

test("quota exhausted: retried after an hour, not a minute", async () => {
  google.behave({ failNext: { code: status.RESOURCE_EXHAUSTED, times: 1 } });
  expect(await rail.uploadConversions(destination(), batch(3))).toEqual({ kind: "retry_batch", code: "RESOURCE_EXHAUSTED", retryAfterSeconds: 3600 });
});

test("PERMISSION_DENIED, NOT_FOUND and FAILED_PRECONDITION refuse the destination: nothing of the batch is decided", async () => {
  for (const code of [status.PERMISSION_DENIED, status.NOT_FOUND, status.FAILED_PRECONDITION]) {
    google.reset();
    google.behave({ failNext: { code, times: 1 } });
    expect(await rail.uploadConversions(destination(), batch(4))).toEqual({ kind: "reauth", code: status[code] });
    expect(google.requests).toHaveLength(1);
    expect(google.accepted).toHaveLength(0);
  }
});

test("the destination refused after Google decided part of a split batch: decided rows keep Google's answer, only the open ones wait", async () => {
  // Call 1 (10 rows) is refused for row 9, call 2 (rows 0-4) goes in, call 3 (rows 5-9) meets PERMISSION_DENIED.
  google.behave({
    rejectEvent: (event) => (event.transaction_id === "order-9" ? "INVALID_FORMAT" : undefined),
    failNext: { code: status.PERMISSION_DENIED, times: 1, after: 2 },
  });
  const outcome = await rail.uploadConversions(destination(), batch(10));
  expect(outcome).toEqual({
    kind: "rows",
    rows: [
      ...Array(5).fill({ kind: "accepted", requestId: expect.any(String) }),
      ...Array(5).fill({ kind: "retry", code: "PERMISSION_DENIED", retryAfterSeconds: 3600 }),
    ],
    requestId: expect.any(String),
  });
  expect(google.requests).toHaveLength(3);
});

test("a call slower than the timeout is a retry (DEADLINE_EXCEEDED), not a hang", async () => {
  const impatient = new DataManagerRail(settings, new AccessTokens(settings), { callTimeoutMs: 200 });
  try {
    google.behave({ latencyMs: 1000 });
    expect(await impatient.uploadConversions(destination(), batch(2))).toEqual({ kind: "retry_batch", code: "DEADLINE_EXCEEDED", retryAfterSeconds: 60 });
  } finally {
    await impatient.close();
  }
});

test("a revoked grant is a reauth, and no request reaches Google", async () => {
  const dest = destination();
  oauth.revoke(dest.refreshToken);
  expect(await rail.uploadConversions(dest, batch(3))).toEqual({ kind: "reauth", code: "INVALID_GRANT" });
  expect(google.requests).toHaveLength(0);
  expect(google.unauthenticated).toBe(0);
});

test("a grant revoked after its token was cached: Google refuses the token, the refresh fails, reauth", async () => {
  const dest = destination();
  await rail.uploadConversions(dest, batch(1));
  oauth.revoke(dest.refreshToken);
  expect(await rail.uploadConversions(dest, batch(2))).toEqual({ kind: "reauth", code: "INVALID_GRANT" });
  expect(google.unauthenticated).toBe(1);
  expect(google.requests).toHaveLength(1);
});

test("UNAUTHENTICATED for a cached token: forgotten, refreshed once, and the batch goes in", async () => {
  const dest = destination();
  const first = oauth.grant(dest.refreshToken);
  await rail.uploadConversions(dest, batch(1));
  expired.add(first);
  oauth.grant(dest.refreshToken);
  const outcome = await rail.uploadConversions(dest, batch(2));
  expect(outcome).toMatchObject({ kind: "rows", rows: [{ kind: "accepted" }, { kind: "accepted" }] });
  expect(google.unauthenticated).toBe(1);
});

test("without ad_user_data consent no identifier leaves, but the click id does, with the refusal stated", async () => {
  const denied = { adUserData: "denied", adPersonalization: "denied" } as const;
  const outcome = await rail.uploadConversions(destination(), [
    conversion(1, { consent: denied }),
    conversion(2, { consent: { adUserData: "unspecified", adPersonalization: "granted" } }),
    // Only an email, which may not be sent: nothing left to match on.
    conversion(3, { consent: denied, clickId: undefined, phoneSha256: undefined }),
  ]);
  expect(outcome).toMatchObject({ kind: "rows", rows: [{ kind: "accepted" }, { kind: "accepted" }, { kind: "failed", code: "INVALID_NO_IDENTIFIERS" }] });
  const events = google.requests[0].events ?? [];
  expect(events).toHaveLength(2);
  expect(events[0]).toMatchObject({ ad_identifiers: { gclid: "Cj0KCQiA-gclid_1" }, consent: { ad_user_data: "CONSENT_DENIED", ad_personalization: "CONSENT_DENIED" } });
  expect(events[1]).toMatchObject({ ad_identifiers: { gclid: "Cj0KCQiA-gclid_2" }, consent: { ad_user_data: "CONSENT_STATUS_UNSPECIFIED", ad_personalization: "CONSENT_GRANTED" } });
  for (const event of events) expect(event.user_data).toBeUndefined();
});

test("rows that fail local checks are never sent", async () => {
  const invalid: [Partial<Conversion>, string][] = [
    [{ orderId: "" }, "INVALID_ORDER_ID"],
    [{ orderId: "x".repeat(65) }, "INVALID_ORDER_ID"],
    [{ orderId: "has space" }, "INVALID_ORDER_ID"],
    [{ conversionTime: "2025-03-01T14:05:00+03:00" }, "INVALID_CONVERSION_TIME"],
    [{ conversionTime: "2025-02-30 14:05:00+03:00" }, "INVALID_CONVERSION_TIME"],
    [{ value: "-1.00" }, "INVALID_VALUE"],
    [{ value: "1e3" }, "INVALID_VALUE"],
    [{ currency: "try" }, "INVALID_CURRENCY"],
    [{ emailSha256: sha256("a").toUpperCase() }, "INVALID_EMAIL_HASH"],
    [{ phoneSha256: "+905550001" }, "INVALID_PHONE_HASH"],
    [{ clickId: { type: "gclid", value: "two words" } }, "INVALID_CLICK_ID"],
    [{ clickId: undefined, emailSha256: undefined, phoneSha256: undefined }, "INVALID_NO_IDENTIFIERS"],
  ];
  const rows = [...invalid.map(([overrides], n) => conversion(n, overrides)), conversion(99)];
  const outcome = await rail.uploadConversions(destination(), rows);

  if (outcome.kind !== "rows") throw new Error(`expected rows, got ${outcome.kind}`);
  expect(outcome.rows.slice(0, -1).map((row) => row.kind === "failed" && row.code)).toEqual(invalid.map(([, code]) => code));
  expect(outcome.rows.at(-1)).toEqual({ kind: "accepted", requestId: expect.any(String) });
  expect(transactionIds(google.requests)).toEqual(["order-99"]);

  // A batch with nothing valid makes no request at all, not even for a token.
  const tokenRequests = oauth.requests;
  const none = await rail.uploadConversions(destination(), [conversion(1, { currency: "" })]);
  expect(none).toEqual({ kind: "rows", rows: [{ kind: "failed", code: "INVALID_CURRENCY", message: expect.any(String) }] });
  expect(google.requests).toHaveLength(1);
  expect(oauth.requests).toBe(tokenRequests);
});

test("retractions are refused without a request: the Data Manager API cannot retract", async () => {
  const outcome = await rail.retractConversions(destination(), [{ rowId: "r1", orderId: "order-1", adjustmentTime: "2025-03-02 10:00:00+03:00" }]);
  expect(outcome).toEqual({ kind: "rows", rows: [{ kind: "failed", code: "RETRACTION_UNSUPPORTED", message: expect.any(String) }] });
  expect(google.requests).toHaveLength(0);
});

test("plaintext gRPC is refused at construction unless the endpoint is loopback", async () => {
  const tokens = new AccessTokens(settings);
  expect(() => new DataManagerRail({ ...settings, dataManagerEndpoint: "datamanager.googleapis.com:443" }, tokens)).toThrow(/loopback/);
  expect(() => new DataManagerRail({ ...settings, dataManagerEndpoint: "10.0.0.8:8443" }, tokens)).toThrow(/loopback/);
  expect(() => new DataManagerRail({ ...settings, dataManagerEndpoint: undefined }, tokens)).toThrow(/loopback/);
  expect(() => new DataManagerRail({ ...settings, dataManagerEndpoint: "localhost" }, tokens)).toThrow(/host:port/);
  for (const endpoint of ["localhost:50051", "[::1]:50051"]) {
    await new DataManagerRail({ ...settings, dataManagerEndpoint: endpoint }, tokens).close();
  }
  // TLS to Google's own endpoint is the default and needs no override.
  await new DataManagerRail({ ...settings, insecure: false, dataManagerEndpoint: undefined }, tokens).close();
});
