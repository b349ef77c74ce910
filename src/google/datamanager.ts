/*
 * The Data Manager API rail: conversions go to Google as IngestEvents requests through Google's
 * own client library (@google-ads/datamanager, gRPC). A request is all-or-nothing (Google fails
 * the whole request when one event is invalid), so a rejected batch is halved until the bad rows
 * stand alone; everything else Google says is turned into one outcome per row.
 *
 * Facts about the API (its v1 protos and developer guides) this file relies on:
 * - at most 2,000 events per request; the response carries a request_id that
 *   RetrieveRequestStatus later turns into processing results (matched records, errors);
 * - the same transaction_id sent again is treated as an adjustment of that conversion (a
 *   restatement of its value), never as a second conversion;
 * - there is no retraction: an event cannot be withdrawn, only restated.
 */
import { IngestionServiceClient } from "@google-ads/datamanager";
import type { protos } from "@google-ads/datamanager";
// google-gax is the library's own runtime; its grpc re-export is the very grpc-js instance the
// client builds channels with, so credentials made here are recognised by it.
import { grpc, Status, type CallOptions } from "google-gax";
import { AccessTokens, ReauthRequired, TokenEndpointUnavailable } from "./oauth";
import type { BatchOutcome, Conversion, Destination, GoogleSettings, RailClient, Retraction, RowOutcome } from "./types";

type v1 = typeof protos.google.ads.datamanager.v1;
type IngestEventsRequest = protos.google.ads.datamanager.v1.IIngestEventsRequest;
type Event = protos.google.ads.datamanager.v1.IEvent;
type ConsentStatus = keyof v1["ConsentStatus"];

const GOOGLE_ENDPOINT = "datamanager.googleapis.com:443";
/** IngestEvents takes at most this many events. */
const MAX_EVENTS = 2_000;
const LOOPBACK_HOSTS = new Set(["127.0.0.1", "[::1]", "localhost"]);

/** One call may not hang longer than this; gax's own retries are off, so it is the whole call. */
const CALL_TIMEOUT_MS = 30_000;
/** Isolating bad rows stops after this long; rows not yet decided are retried later. */
const UPLOAD_DEADLINE_MS = 120_000;

const TRANSIENT_RETRY_SECONDS = 60;
/** Quota, and rows that must wait for a later batch: an hour. */
const LONG_RETRY_SECONDS = 3_600;

/**
 * INVALID_ARGUMENT reasons that concern the destination, not a row: every row would fail alike,
 * so splitting cannot help and no row is to blame. The destination waits for a person instead.
 */
const DESTINATION_REASONS = new Set([
  "INVALID_DESTINATION",
  "INVALID_CONVERSION_ACTION_ID",
  "INVALID_CONVERSION_ACTION_TYPE",
  "OPERATING_ACCOUNT_LOGIN_ACCOUNT_MISMATCH",
  "DESTINATION_ACCOUNT_TYPE_MISMATCH",
  "TERMS_AND_CONDITIONS_NOT_SIGNED",
  "NOT_ALLOWLISTED",
  "DESTINATION_ACCOUNT_NOT_ENABLED_ENHANCED_CONVERSIONS_FOR_LEADS",
  "DESTINATION_ACCOUNT_DATA_POLICY_PROHIBITS_ENHANCED_CONVERSIONS",
  "DESTINATION_ACCOUNT_ENHANCED_CONVERSIONS_TERMS_NOT_SIGNED",
]);

/** Worth sending again as it is (the Google Ads rail retries the same codes). */
const TRANSIENT_CODES = new Set([Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.INTERNAL, Status.ABORTED, Status.UNKNOWN, Status.CANCELLED]);
/** A request refused for who sends it or where it goes (the grant, the account's access, the conversion action): no row's fault. */
const DESTINATION_CODES = new Set([Status.UNAUTHENTICATED, Status.PERMISSION_DENIED, Status.NOT_FOUND, Status.FAILED_PRECONDITION]);

const CONSENT: Record<Conversion["consent"]["adUserData"], ConsentStatus> = {
  granted: "CONSENT_GRANTED",
  denied: "CONSENT_DENIED",
  unspecified: "CONSENT_STATUS_UNSPECIFIED",
};

export interface DataManagerRailOptions {
  /** Per-call timeout; tests shorten it. */
  callTimeoutMs?: number;
}

/** What RetrieveRequestStatus says about one of our requests (we always send one destination). */
export interface RequestStatusSummary {
  /**
   * SUCCESS, PROCESSING, FAILED, PARTIAL_SUCCESS or REQUEST_STATUS_UNKNOWN from Google; ours,
   * REQUEST_REFUSED when Google will not report on this request id (its reason in `errors`).
   */
  status: string;
  /** Events Google has processed for the request. */
  recordCount: number;
  /** Record counts by processing error reason, e.g. { PROCESSING_ERROR_REASON_INVALID_GCLID: 2 }. */
  errors: Record<string, number>;
  warnings: Record<string, number>;
}

/** Why an upload stopped before every row was decided; it applies to the rows still open. */
type Halt =
  | { kind: "retry"; code: string; retryAfterSeconds: number }
  | { kind: "reauth"; code: string }
  | { kind: "failed"; code: string; message: string };

/** The state of one uploadConversions call. */
interface Upload {
  destination: Destination;
  conversions: Conversion[];
  outcomes: (RowOutcome | undefined)[];
  token: string;
  /** Whether the access token was already renewed once after UNAUTHENTICATED. */
  renewed: boolean;
  /** Rows Google accepted or refused so far: a reauth then no longer means "nothing was sent". */
  decidedByGoogle: number;
  requestsLeft: number;
  deadline: number;
  /** The first accepted request's id (isolating bad rows sends several). */
  requestId?: string;
}

/** The fields of a gax error we use: the gRPC status, and ErrorInfo / BadRequest details when Google sent them. */
interface RpcError {
  code: Status;
  details?: string;
  reason?: string;
  statusDetails?: unknown[];
}

export class DataManagerRail implements RailClient {
  private readonly client: IngestionServiceClient;
  private readonly callTimeoutMs: number;

  constructor(settings: GoogleSettings, private readonly accessTokens: AccessTokens, options: DataManagerRailOptions = {}) {
    const { host, port } = parseEndpoint(settings.dataManagerEndpoint ?? GOOGLE_ENDPOINT);
    if (settings.insecure && !LOOPBACK_HOSTS.has(host)) {
      throw new Error(`Plaintext gRPC is only allowed to a loopback address, not ${host}.`);
    }
    this.callTimeoutMs = options.callTimeoutMs ?? CALL_TIMEOUT_MS;
    this.client = new IngestionServiceClient({
      servicePath: host,
      port,
      // Explicit channel credentials: the client then asks no Application Default Credentials
      // for anything; each call carries the destination's own token (see callOptions).
      sslCreds: settings.insecure ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(),
      // Stated so the library does not probe the environment (metadata server) to find it.
      universeDomain: "googleapis.com",
      fallback: false,
    });
  }

  async uploadConversions(destination: Destination, conversions: Conversion[]): Promise<BatchOutcome> {
    if (conversions.length > MAX_EVENTS) throw new RangeError(`At most ${MAX_EVENTS} conversions per upload.`);
    // A destination Google could never take waits for a person, with every row of the batch.
    if (!validDestination(destination)) return { kind: "reauth", code: "INVALID_DESTINATION" };
    const outcomes: (RowOutcome | undefined)[] = conversions.map((conversion) => {
      const problem = validate(conversion);
      return problem && { kind: "failed", ...problem };
    });
    const valid = conversions.flatMap((_, index) => (outcomes[index] ? [] : [index]));
    if (valid.length === 0) return { kind: "rows", rows: outcomes as RowOutcome[] };

    const upload: Upload = {
      destination,
      conversions,
      outcomes,
      token: "",
      renewed: false,
      decidedByGoogle: 0,
      // Enough to isolate two bad rows anywhere in the batch: 1 + 2 requests per level, twice.
      requestsLeft: 1 + 4 * Math.ceil(Math.log2(valid.length)),
      deadline: Date.now() + UPLOAD_DEADLINE_MS,
    };
    let halt: Halt | undefined;
    try {
      upload.token = await this.accessTokens.get(destination.refreshToken);
      halt = await this.deliver(upload, valid);
    } catch (error) {
      halt = tokenHalt(error);
    }
    return conclude(upload, halt);
  }

  async retractConversions(_destination: Destination, retractions: Retraction[]): Promise<BatchOutcome> {
    return {
      kind: "rows",
      rows: retractions.map(() => ({
        kind: "failed",
        code: "RETRACTION_UNSUPPORTED",
        message: "The Data Manager API cannot retract a conversion (it can only restate its value); retract it through the Google Ads API.",
      })),
    };
  }

  /**
   * Google's processing result for a request id from uploadConversions. A request Google will
   * not report on (INVALID_ARGUMENT, NOT_FOUND) is REQUEST_REFUSED: asking again changes nothing.
   * Throws ReauthRequired / TokenEndpointUnavailable from the token exchange, or any other gax
   * error (with its gRPC `code`): unreachable, out of quota or not authorised now.
   */
  async requestStatus(destination: Destination, requestId: string): Promise<RequestStatusSummary> {
    for (let attempt = 1; ; attempt++) {
      const token = await this.accessTokens.get(destination.refreshToken);
      try {
        const [response] = await this.client.retrieveRequestStatus({ requestId }, this.callOptions(token));
        const status = response.requestStatusPerDestination?.[0];
        return {
          status: String(status?.requestStatus ?? "REQUEST_STATUS_UNKNOWN"),
          recordCount: Number(String(status?.eventsIngestionStatus?.recordCount ?? 0)),
          errors: countsByReason(status?.errorInfo?.errorCounts),
          warnings: countsByReason(status?.warningInfo?.warningCounts),
        };
      } catch (caught) {
        const error = rpcError(caught);
        if (error.code === Status.UNAUTHENTICATED) {
          // A cached token refused: once more with a fresh one, whose exchange says whether the grant still stands.
          this.accessTokens.forget(destination.refreshToken);
          if (attempt === 1) continue;
        }
        if (error.code === Status.INVALID_ARGUMENT || error.code === Status.NOT_FOUND) {
          return { status: "REQUEST_REFUSED", recordCount: 0, errors: { [error.reason ?? Status[error.code]]: 0 }, warnings: {} };
        }
        throw caught;
      }
    }
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  /** Sends the rows at `indices`, halving on INVALID_ARGUMENT; returns a Halt if it had to stop early. */
  private async deliver(upload: Upload, indices: number[]): Promise<Halt | undefined> {
    if (Date.now() > upload.deadline) {
      return { kind: "retry", code: "DEADLINE_EXCEEDED", retryAfterSeconds: TRANSIENT_RETRY_SECONDS };
    }
    if (upload.requestsLeft <= 0) {
      // More bad rows than we isolate per upload: the rest go again in a later batch.
      return { kind: "retry", code: "INVALID_ARGUMENT_NOT_ISOLATED", retryAfterSeconds: LONG_RETRY_SECONDS };
    }
    const { error, requestId } = await this.send(upload, indices);
    if (!error) {
      // Each row keeps the id of the request that carried it: its processing status is that request's.
      for (const index of indices) upload.outcomes[index] = requestId ? { kind: "accepted", requestId } : { kind: "accepted" };
      upload.decidedByGoogle += indices.length;
      return undefined;
    }
    if (error.code !== Status.INVALID_ARGUMENT) return classify(error);

    const reason = error.reason ?? "INVALID_ARGUMENT";
    if (DESTINATION_REASONS.has(reason)) return { kind: "reauth", code: reason };
    if (indices.length === 1) {
      upload.outcomes[indices[0]] = { kind: "failed", code: reason, message: describe(error) };
      upload.decidedByGoogle += 1;
      return undefined;
    }
    const middle = Math.ceil(indices.length / 2);
    return (await this.deliver(upload, indices.slice(0, middle))) ?? (await this.deliver(upload, indices.slice(middle)));
  }

  /** One IngestEvents request; on UNAUTHENTICATED the token is renewed and the request repeated, once per upload. */
  private async send(upload: Upload, indices: number[]): Promise<{ error?: RpcError; requestId?: string }> {
    const request = buildRequest(upload.destination, indices.map((index) => upload.conversions[index]));
    for (;;) {
      upload.requestsLeft--;
      try {
        const [response] = await this.client.ingestEvents(request, this.callOptions(upload.token));
        upload.requestId ??= response.requestId || undefined;
        return { requestId: response.requestId || undefined };
      } catch (caught) {
        const error = rpcError(caught);
        if (error.code !== Status.UNAUTHENTICATED || upload.renewed) return { error };
        // Our cached token may have been revoked or expired early: fetch a fresh one and try again.
        upload.renewed = true;
        this.accessTokens.forget(upload.destination.refreshToken);
        upload.token = await this.accessTokens.get(upload.destination.refreshToken);
      }
    }
  }

  /**
   * The token goes in per-call metadata, not in channel credentials: grpc-js refuses to attach
   * call credentials to a plaintext channel, and this way tests and production share one path.
   */
  private callOptions(token: string): CallOptions {
    return { timeout: this.callTimeoutMs, retry: null, otherArgs: { headers: { authorization: `Bearer ${token}` } } };
  }
}

export function createDataManagerRail(settings: GoogleSettings, accessTokens = new AccessTokens(settings)): DataManagerRail {
  return new DataManagerRail(settings, accessTokens);
}

function parseEndpoint(endpoint: string): { host: string; port: number } {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(endpoint);
  if (!match || Number(match[2]) > 65535) throw new Error(`The Data Manager endpoint must be host:port, not "${endpoint}".`);
  return { host: match[1], port: Number(match[2]) };
}

/** Customer ids of ten digits and a conversion action id of digits: anything else Google refuses for every row. */
function validDestination(destination: Destination): boolean {
  return /^\d{10}$/.test(destination.customerId) &&
    (destination.loginCustomerId === undefined || /^\d{10}$/.test(destination.loginCustomerId)) &&
    /^\d{1,20}$/.test(destination.conversionAction);
}

const PLAIN = /^[\x21-\x7e]+$/;
const CONVERSION_TIME = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})([+-])(\d{2}):(\d{2})$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Checks a row before it can reach Google; returns what is wrong with it, if anything. */
function validate(conversion: Conversion): { code: string; message: string } | undefined {
  const { orderId, clickId, consent } = conversion;
  if (!PLAIN.test(orderId) || orderId.length > 64) {
    return { code: "INVALID_ORDER_ID", message: "The order id must be 1 to 64 printable characters without spaces." };
  }
  if (epochSeconds(conversion.conversionTime) === undefined) {
    return { code: "INVALID_CONVERSION_TIME", message: "The conversion time must be a real time written yyyy-mm-dd hh:mm:ss+hh:mm." };
  }
  if (!/^\d{1,15}(\.\d{1,6})?$/.test(conversion.value)) {
    return { code: "INVALID_VALUE", message: "The value must be a non-negative decimal number." };
  }
  if (!/^[A-Z]{3}$/.test(conversion.currency)) {
    return { code: "INVALID_CURRENCY", message: "The currency must be a three-letter ISO 4217 code." };
  }
  if (!Object.hasOwn(CONSENT, consent?.adUserData ?? "") || !Object.hasOwn(CONSENT, consent?.adPersonalization ?? "")) {
    return { code: "INVALID_CONSENT", message: "Consent signals must be granted, denied or unspecified." };
  }
  if (clickId && (!["gclid", "gbraid", "wbraid"].includes(clickId.type) || !PLAIN.test(clickId.value) || clickId.value.length > 512)) {
    return { code: "INVALID_CLICK_ID", message: "The click id must be a gclid, gbraid or wbraid token." };
  }
  for (const [hash, name] of [[conversion.emailSha256, "EMAIL"], [conversion.phoneSha256, "PHONE"]] as const) {
    if (hash !== undefined && !SHA256_HEX.test(hash)) {
      return { code: `INVALID_${name}_HASH`, message: `The ${name.toLowerCase()} hash must be 64 lower-case hex digits (SHA-256).` };
    }
  }
  if (!clickId && userIdentifiers(conversion).length === 0) {
    return {
      code: "INVALID_NO_IDENTIFIERS",
      message: "The row has no click id, and no email or phone that ad_user_data consent allows us to send.",
    };
  }
  return undefined;
}

/** `yyyy-mm-dd hh:mm:ss±hh:mm` as seconds since the epoch, or undefined if it is not a real time. */
function epochSeconds(time: string): number | undefined {
  const match = CONVERSION_TIME.exec(time);
  if (!match) return undefined;
  const [year, month, day, hour, minute, second, , offsetHours, offsetMinutes] = match.slice(1).map(Number);
  const local = new Date(Date.UTC(year, month - 1, day, hour, minute, second));
  // Date.UTC rolls 30 February over into March; a real date comes back unchanged.
  if (local.getUTCFullYear() !== year || local.getUTCMonth() !== month - 1 || local.getUTCDate() !== day ||
      hour > 23 || minute > 59 || second > 59 || offsetHours > 14 || offsetMinutes > 59) {
    return undefined;
  }
  const offsetSeconds = (offsetHours * 3600 + offsetMinutes * 60) * (match[7] === "-" ? -1 : 1);
  return local.getTime() / 1000 - offsetSeconds;
}

/** The hashed identifiers we may send: only with the user's consent to ad user data (also enforced upstream). */
function userIdentifiers(conversion: Conversion): protos.google.ads.datamanager.v1.IUserIdentifier[] {
  if (conversion.consent.adUserData !== "granted") return [];
  return [
    ...(conversion.emailSha256 ? [{ emailAddress: conversion.emailSha256 }] : []),
    ...(conversion.phoneSha256 ? [{ phoneNumber: conversion.phoneSha256 }] : []),
  ];
}

function buildRequest(destination: Destination, conversions: Conversion[]): IngestEventsRequest {
  return {
    destinations: [{
      operatingAccount: { accountType: "GOOGLE_ADS", accountId: destination.customerId },
      loginAccount: destination.loginCustomerId ? { accountType: "GOOGLE_ADS", accountId: destination.loginCustomerId } : undefined,
      productDestinationId: destination.conversionAction,
    }],
    events: conversions.map(toEvent),
    // Our identifiers are SHA-256 digests written in hex (ignored by Google when a request has none).
    encoding: "HEX",
  };
}

function toEvent(conversion: Conversion): Event {
  const identifiers = userIdentifiers(conversion);
  return {
    transactionId: conversion.orderId,
    eventTimestamp: { seconds: epochSeconds(conversion.conversionTime), nanos: 0 },
    conversionValue: Number(conversion.value),
    currency: conversion.currency,
    adIdentifiers: conversion.clickId ? { [conversion.clickId.type]: conversion.clickId.value } : undefined,
    userData: identifiers.length > 0 ? { userIdentifiers: identifiers } : undefined,
    consent: { adUserData: CONSENT[conversion.consent.adUserData], adPersonalization: CONSENT[conversion.consent.adPersonalization] },
  };
}

/** What a failed request means for the rows it carried, other than INVALID_ARGUMENT (which is split). */
function classify(error: RpcError): Halt {
  if (TRANSIENT_CODES.has(error.code)) return { kind: "retry", code: Status[error.code], retryAfterSeconds: TRANSIENT_RETRY_SECONDS };
  if (error.code === Status.RESOURCE_EXHAUSTED) return { kind: "retry", code: "RESOURCE_EXHAUSTED", retryAfterSeconds: LONG_RETRY_SECONDS };
  // Google's ErrorInfo reason, when it gives one, says more than the status.
  if (DESTINATION_CODES.has(error.code)) return { kind: "reauth", code: error.reason ?? Status[error.code] };
  // OUT_OF_RANGE, UNIMPLEMENTED and the like: sending again will not change the answer.
  return { kind: "failed", code: Status[error.code] ?? String(error.code), message: describe(error) };
}

function tokenHalt(error: unknown): Halt {
  if (error instanceof ReauthRequired) return { kind: "reauth", code: error.code };
  if (error instanceof TokenEndpointUnavailable) return { kind: "retry", code: error.code, retryAfterSeconds: TRANSIENT_RETRY_SECONDS };
  throw error;
}

/** One outcome per row from what was decided and why the upload stopped, if it did. */
function conclude(upload: Upload, halt: Halt | undefined): BatchOutcome {
  if (halt?.kind === "reauth" && upload.decidedByGoogle === 0) return { kind: "reauth", code: halt.code };
  if (halt?.kind === "retry" && upload.outcomes.every((outcome) => outcome === undefined)) {
    return { kind: "retry_batch", code: halt.code, retryAfterSeconds: halt.retryAfterSeconds };
  }
  // Rows still open share the halt's fate. A refusal of the destination after Google decided some
  // rows (rare: between the requests of one split batch) keeps those decisions and leaves the open
  // rows for a later batch, whose first request meets the refusal and hands the destination over.
  const open: RowOutcome | undefined = halt?.kind === "reauth" ? { kind: "retry", code: halt.code, retryAfterSeconds: LONG_RETRY_SECONDS } : halt;
  const rows = upload.outcomes.map((outcome) => (outcome ?? open) as RowOutcome);
  return upload.requestId ? { kind: "rows", rows, requestId: upload.requestId } : { kind: "rows", rows };
}

/** A gax error as an RpcError; anything else (a bug, a closed client) is not ours to classify. */
function rpcError(error: unknown): RpcError {
  if (error instanceof Error && typeof (error as Partial<RpcError>).code === "number") return error as unknown as RpcError;
  throw error;
}

/** Google's explanation: the BadRequest field violations if any, else the status message. */
function describe(error: RpcError): string {
  const violations = (error.statusDetails ?? []).flatMap((detail) => {
    const list = (detail as { fieldViolations?: { field?: string; description?: string }[] } | null)?.fieldViolations;
    return Array.isArray(list) ? list.map((v) => [v.field, v.description].filter(Boolean).join(": ")) : [];
  });
  return violations.length > 0 ? violations.join("; ") : error.details || Status[error.code] || "error";
}

function countsByReason(counts: { reason?: unknown; recordCount?: unknown }[] | null | undefined): Record<string, number> {
  const result: Record<string, number> = {};
  for (const count of counts ?? []) result[String(count.reason)] = Number(String(count.recordCount ?? 0));
  return result;
}
