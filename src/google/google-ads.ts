/*
 * The Google Ads API rail (for developer tokens that still upload there): click and call
 * conversions through ConversionUploadService, retractions through
 * ConversionAdjustmentUploadService, over gRPC with google-ads-node's generated clients.
 *
 * Not google-ads-api's Customer, which wraps the same clients: it makes its own OAuth client
 * from the refresh token against Google's fixed token endpoint and always dials TLS, so it can
 * take neither our AccessTokens nor a loopback endpoint. Here the access token travels as
 * per-call `authorization` metadata: the same path over TLS in production and over the
 * plaintext loopback channel in tests (grpc-js attaches call credentials only to TLS channels).
 *
 * Google's answer becomes one outcome per row. With partial_failure, row errors come back in
 * partial_failure_error: a google.rpc.Status holding a GoogleAdsFailure whose errors point at
 * rows by index. A failed call carries its GoogleAdsFailure in a binary trailer.
 */
import * as grpc from "@grpc/grpc-js";
import { ConversionAdjustmentUploadServiceClient, ConversionUploadServiceClient, protos } from "google-ads-node";
import { AccessTokens, ReauthRequired, TokenEndpointUnavailable } from "./oauth";
import type { BatchOutcome, ConsentSignal, Conversion, Destination, GoogleSettings, RailClient, Retraction, RowOutcome } from "./types";

type ClickConversion = protos.google.ads.googleads.v25.services.IClickConversion;
type CallConversion = protos.google.ads.googleads.v25.services.ICallConversion;
type ConversionAdjustment = protos.google.ads.googleads.v25.services.IConversionAdjustment;
type UserIdentifier = protos.google.ads.googleads.v25.common.IUserIdentifier;
type ConsentStatus = keyof typeof protos.google.ads.googleads.v25.enums.ConsentStatusEnum.ConsentStatus;
type Status = protos.google.rpc.IStatus;

/** google-ads-node 25.x speaks v25; the failure's type URL and trailer name carry the version. */
const FAILURE_TYPE = "google.ads.googleads.v25.errors.GoogleAdsFailure";
const FAILURE_TRAILER = "google.ads.googleads.v25.errors.googleadsfailure-bin";
const GOOGLE_ADS_ENDPOINT = "googleads.googleapis.com:443";
const LOOPBACK_HOSTS = new Set(["127.0.0.1", "::1", "localhost"]);
const CALL_TIMEOUT_MS = 30_000;

/** Google imports clicks and new conversion actions some hours late: try again after 6 h (calls: 12 h). */
const TOO_RECENT_SECONDS = 6 * 3600;
const TOO_RECENT_CALL_SECONDS = 12 * 3600;
/** A first short wait for transient failures; backoff across repeated attempts belongs to the caller. */
const TRANSIENT_RETRY_SECONDS = 60;
/** API quota is counted per developer token and day: wait long unless Google says how long. */
const QUOTA_RETRY_SECONDS = 3600;
/** Rows of a later RPC when the destination is refused after an earlier one went through: a later batch meets the refusal first. */
const REFUSED_RETRY_SECONDS = 3600;

/** Google already has the conversion (or the retraction): delivered, keep the code. */
const ALREADY_THERE = new Set([
  "CLICK_CONVERSION_ALREADY_EXISTS",
  "CALL_CONVERSION_ALREADY_EXISTS",
  "ORDER_ID_ALREADY_IN_USE",
  "CONVERSION_ALREADY_RETRACTED",
  "RESTATEMENT_ALREADY_EXISTS",
]);

/** Error codes worth retrying, with how long to wait. Every other code is final. */
const RETRY_AFTER = new Map<string, number>([
  ["TOO_RECENT_EVENT", TOO_RECENT_SECONDS],
  ["TOO_RECENT_CONVERSION_ACTION", TOO_RECENT_SECONDS],
  ["TOO_RECENT_CONVERSION", TOO_RECENT_SECONDS],
  ["TOO_RECENT_CALL", TOO_RECENT_CALL_SECONDS],
  ["INTERNAL_ERROR", TRANSIENT_RETRY_SECONDS],
  ["TRANSIENT_ERROR", TRANSIENT_RETRY_SECONDS],
  ["DEADLINE_EXCEEDED", TRANSIENT_RETRY_SECONDS],
  ["CONCURRENT_MODIFICATION", TRANSIENT_RETRY_SECONDS],
  ["RESOURCE_EXHAUSTED", QUOTA_RETRY_SECONDS],
  ["RESOURCE_TEMPORARILY_EXHAUSTED", QUOTA_RETRY_SECONDS],
]);

/** The destination's OAuth grant does not work (or its Google account may not act here); under UNAUTHENTICATED, one try with a fresh access token first. */
const GRANT_REFUSED = new Set([
  "OAUTH_TOKEN_INVALID",
  "OAUTH_TOKEN_EXPIRED",
  "OAUTH_TOKEN_DISABLED",
  "OAUTH_TOKEN_REVOKED",
  "GOOGLE_ACCOUNT_DELETED",
  "GOOGLE_ACCOUNT_AUTHENTICATION_FAILED",
  "NOT_ADS_USER",
  "TWO_STEP_VERIFICATION_NOT_ENROLLED",
  "ADVANCED_PROTECTION_NOT_ENROLLED",
  "USER_PERMISSION_DENIED",
]);

/**
 * Request-level codes about the destination rather than its rows: the account, the customer ids,
 * the conversion action, the terms. Every batch would be refused alike, so the destination
 * waits for a person (as for a refused grant) and its rows stay due. The same codes on a single
 * row of a partial failure stay that row's failure.
 */
const DESTINATION_REFUSED = new Set([
  // authorization_error, authentication_error: the account.
  "CUSTOMER_NOT_ENABLED",
  "CUSTOMER_NOT_FOUND",
  "CLIENT_CUSTOMER_ID_INVALID",
  "INCOMPLETE_SIGNUP",
  "MISSING_TOS",
  "ACTION_NOT_PERMITTED",
  "ACTION_NOT_PERMITTED_FOR_SUSPENDED_ACCOUNT",
  "ACCESS_DENIED_FOR_ACCOUNT_TYPE",
  "SERVICE_ACCESS_DENIED",
  "INVALID_LOGIN_CUSTOMER_ID_SERVING_CUSTOMER_ID_COMBINATION",
  // header_error, request_error: the customer ids we send for the destination.
  "INVALID_LOGIN_CUSTOMER_ID",
  "INVALID_CUSTOMER_ID",
  "CANNOT_BE_EXECUTED_BY_MANAGER_ACCOUNT",
  // not_allowlisted_error: what new adopters of click-conversion imports are told since June 2026.
  "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE",
  // conversion_upload_error, conversion_adjustment_upload_error: the account's terms and settings, the conversion action.
  "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS",
  "CUSTOMER_DATA_POLICY_PROHIBITS_ENHANCED_CONVERSIONS",
  "CUSTOMER_NOT_ENABLED_ENHANCED_CONVERSIONS_FOR_LEADS",
  "NO_CONVERSION_ACTION_FOUND",
  "INVALID_CONVERSION_ACTION_TYPE",
]);

/**
 * Request-level codes about our own setup, not a tenant's: the developer token
 * (GOOGLE_ADS_DEVELOPER_TOKEN) and its Cloud project are shared by every destination. An operator
 * fixes them once, so the rows wait and go again by themselves, instead of every Google Ads
 * destination waiting for its own people to set it active again.
 */
const OPERATOR_REFUSED = new Set([
  "DEVELOPER_TOKEN_INVALID",
  "DEVELOPER_TOKEN_NOT_APPROVED",
  "DEVELOPER_TOKEN_NOT_ON_ALLOWLIST",
  "DEVELOPER_TOKEN_PROHIBITED",
  "PROJECT_DISABLED",
  "CLOUD_PROJECT_NOT_APPROVED_FOR_PRODUCTION",
]);
/** How long rows wait while our own setup is refused (Watchtower's delivery_lag shows the wait). */
const OPERATOR_RETRY_SECONDS = 3600;

/** gRPC statuses that refuse a request for who sends it or where it goes, whatever the failure says. */
const DESTINATION_STATUSES = new Set([
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.NOT_FOUND,
  grpc.status.FAILED_PRECONDITION,
]);

/** Without a GoogleAdsFailure: worth sending again as it is (the Data Manager rail retries the same codes). */
const TRANSIENT_STATUSES = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.INTERNAL,
  grpc.status.UNKNOWN,
  grpc.status.CANCELLED,
  grpc.status.ABORTED,
]);

const CONSENT: Record<ConsentSignal, ConsentStatus> = { granted: "GRANTED", denied: "DENIED", unspecified: "UNSPECIFIED" };

/** One error of a GoogleAdsFailure, reduced to what decides a row. */
interface AdsError {
  /** The error-code enum name, e.g. TOO_RECENT_EVENT. */
  code: string;
  message: string;
  /** The row (operation) it concerns; absent for errors about the whole request. */
  index?: number;
  /** QuotaErrorDetails.retry_delay. */
  retryDelaySeconds?: number;
}

interface GrpcError extends Error {
  code: number;
  details?: string;
  metadata?: grpc.Metadata;
}

/** How one RPC ended, when it did not return a response. */
type CallFailure =
  /** The destination needs a person (BatchOutcome "reauth"). */
  | { kind: "reauth"; code: string }
  | { kind: "retry_batch"; code: string; retryAfterSeconds: number }
  /** A final request-level error: every row of the RPC fails with it. */
  | { kind: "failed"; code: string; message: string };

interface CallOptions {
  timeout: number;
  retry: null;
  otherArgs: { headers: Record<string, string> };
}

/** The rows one RPC carries (their positions in the batch) and how to send them. */
interface Rpc {
  indices: number[];
  send(options: CallOptions): Promise<[{ partial_failure_error?: Status | null }, ...unknown[]]>;
}

export class GoogleAdsRail implements RailClient {
  private readonly uploads: ConversionUploadServiceClient;
  private readonly adjustments: ConversionAdjustmentUploadServiceClient;
  private readonly developerToken: string;
  private readonly callTimeoutMs: number;

  constructor(
    settings: GoogleSettings,
    private readonly tokens: AccessTokens,
    options: { callTimeoutMs?: number } = {},
  ) {
    if (!settings.developerToken) throw new Error("The Google Ads API rail needs a developer token (GOOGLE_ADS_DEVELOPER_TOKEN).");
    this.developerToken = settings.developerToken;
    this.callTimeoutMs = options.callTimeoutMs ?? CALL_TIMEOUT_MS;
    const { host, port } = parseEndpoint(settings.googleAdsEndpoint ?? GOOGLE_ADS_ENDPOINT);
    if (settings.insecure && !LOOPBACK_HOSTS.has(host.replace(/^\[(.*)\]$/, "$1"))) {
      throw new Error(`Plaintext gRPC is only allowed to a loopback Google Ads endpoint, not ${host}.`);
    }
    const clientOptions = {
      servicePath: host,
      port,
      sslCreds: settings.insecure ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(),
      // Stated, so gax does not ask Application Default Credentials (even a cloud metadata server) for it.
      universeDomain: "googleapis.com",
      // The channel credentials above must come from the grpc-js instance that builds the channel.
      grpc,
    };
    this.uploads = new ConversionUploadServiceClient(clientOptions);
    this.adjustments = new ConversionAdjustmentUploadServiceClient(clientOptions);
  }

  async uploadConversions(destination: Destination, conversions: Conversion[]): Promise<BatchOutcome> {
    const action = conversionActionName(destination);
    const clicks = conversions.flatMap((c, i) => (c.call ? [] : [i]));
    const calls = conversions.flatMap((c, i) => (c.call ? [i] : []));
    return this.deliver(destination, conversions.length, [
      {
        indices: clicks,
        send: (options) =>
          this.uploads.uploadClickConversions(
            { customer_id: destination.customerId, conversions: clicks.map((i) => clickConversion(conversions[i], action)), partial_failure: true },
            options,
          ),
      },
      {
        indices: calls,
        send: (options) =>
          this.uploads.uploadCallConversions(
            { customer_id: destination.customerId, conversions: calls.map((i) => callConversion(conversions[i], action)), partial_failure: true },
            options,
          ),
      },
    ]);
  }

  async retractConversions(destination: Destination, retractions: Retraction[]): Promise<BatchOutcome> {
    const action = conversionActionName(destination);
    const adjustments: ConversionAdjustment[] = retractions.map((r) => ({
      order_id: r.orderId,
      conversion_action: action,
      adjustment_date_time: r.adjustmentTime,
      adjustment_type: "RETRACTION",
    }));
    return this.deliver(destination, retractions.length, [
      {
        indices: retractions.map((_, i) => i),
        send: (options) =>
          this.adjustments.uploadConversionAdjustments(
            { customer_id: destination.customerId, conversion_adjustments: adjustments, partial_failure: true },
            options,
          ),
      },
    ]);
  }

  async close(): Promise<void> {
    await Promise.all([this.uploads.close(), this.adjustments.close()]);
  }

  /** Sends each RPC that has rows, in turn, and gathers one outcome per row of the batch. */
  private async deliver(destination: Destination, rowCount: number, rpcs: Rpc[]): Promise<BatchOutcome> {
    const rows: RowOutcome[] = new Array(rowCount);
    let decided = false;
    for (const rpc of rpcs) {
      if (rpc.indices.length === 0) continue;
      const result = await this.call(destination, rpc);
      if ("response" in result) {
        rowOutcomes(rpc.indices.length, result.response.partial_failure_error).forEach((row, i) => (rows[rpc.indices[i]] = row));
      } else if (result.kind === "failed") {
        for (const i of rpc.indices) rows[i] = result;
      } else if (!decided) {
        // Nothing of this batch has reached Google yet: the batch as a whole waits (or needs reauth).
        return result;
      } else {
        // An earlier RPC of the batch went through: only this RPC's rows wait.
        const retryAfterSeconds = result.kind === "retry_batch" ? result.retryAfterSeconds : REFUSED_RETRY_SECONDS;
        for (const i of rpc.indices) rows[i] = { kind: "retry", code: result.code, retryAfterSeconds };
      }
      decided = true;
    }
    return { kind: "rows", rows };
  }

  /** One RPC with a current access token, retried once with a fresh token if Google refuses the cached one. */
  private async call(destination: Destination, rpc: Rpc): Promise<{ response: { partial_failure_error?: Status | null } } | CallFailure> {
    for (let attempt = 1; ; attempt++) {
      let accessToken: string;
      try {
        accessToken = await this.tokens.get(destination.refreshToken);
      } catch (error) {
        if (error instanceof ReauthRequired) return { kind: "reauth", code: error.code };
        if (error instanceof TokenEndpointUnavailable) return { kind: "retry_batch", code: error.code, retryAfterSeconds: TRANSIENT_RETRY_SECONDS };
        throw error;
      }
      try {
        const [response] = await rpc.send(this.callOptions(accessToken, destination));
        return { response };
      } catch (error) {
        if (!isGrpcError(error)) throw error;
        const failure = callFailure(error);
        // A cached token can be refused while the grant is fine (expired early, rotated). If the
        // grant itself is gone, refreshing answers invalid_grant and no second request is made.
        // A refused developer token or account is no token's fault: no second request either.
        const tokenRefused = GRANT_REFUSED.has(failure.code) || failure.code === "UNAUTHENTICATED";
        if (failure.kind === "reauth" && tokenRefused && error.code === grpc.status.UNAUTHENTICATED && attempt === 1) {
          this.tokens.forget(destination.refreshToken);
          continue;
        }
        return failure;
      }
    }
  }

  private callOptions(accessToken: string, destination: Destination): CallOptions {
    const headers: Record<string, string> = { authorization: `Bearer ${accessToken}`, "developer-token": this.developerToken };
    if (destination.loginCustomerId) headers["login-customer-id"] = destination.loginCustomerId;
    // retry: null turns off gax's own retries (UNAVAILABLE and DEADLINE_EXCEEDED, for up to
    // 10 minutes): one bounded attempt, and our classification decides what happens next.
    return { timeout: this.callTimeoutMs, retry: null, otherArgs: { headers } };
  }
}

function parseEndpoint(endpoint: string): { host: string; port: number } {
  const colon = endpoint.lastIndexOf(":");
  const port = Number(endpoint.slice(colon + 1));
  if (colon <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`The Google Ads endpoint must be host:port, not "${endpoint}".`);
  }
  return { host: endpoint.slice(0, colon), port };
}

function conversionActionName(destination: Destination): string {
  return `customers/${destination.customerId}/conversionActions/${destination.conversionAction}`;
}

function consent(conversion: Conversion) {
  return {
    ad_user_data: CONSENT[conversion.consent.adUserData],
    ad_personalization: CONSENT[conversion.consent.adPersonalization],
  };
}

function clickConversion(conversion: Conversion, action: string): ClickConversion {
  return {
    ...(conversion.clickId && { [conversion.clickId.type]: conversion.clickId.value }),
    conversion_action: action,
    conversion_date_time: conversion.conversionTime,
    conversion_value: Number(conversion.value),
    currency_code: conversion.currency,
    order_id: conversion.orderId,
    consent: consent(conversion),
    user_identifiers: userIdentifiers(conversion),
  };
}

/** CallConversion has no order id: Google recognises a re-sent call by caller, call start and action. */
function callConversion(conversion: Conversion, action: string): CallConversion {
  return {
    caller_id: conversion.call?.callerId,
    call_start_date_time: conversion.call?.callStartTime,
    conversion_action: action,
    conversion_date_time: conversion.conversionTime,
    conversion_value: Number(conversion.value),
    currency_code: conversion.currency,
    consent: consent(conversion),
  };
}

/**
 * Hashed email and phone, only with ad_user_data=granted. The database already withholds them
 * otherwise; checked again here because sending them would break the consent promise.
 */
function userIdentifiers(conversion: Conversion): UserIdentifier[] {
  if (conversion.consent.adUserData !== "granted") return [];
  const identifiers: UserIdentifier[] = [];
  if (conversion.emailSha256) identifiers.push({ user_identifier_source: "FIRST_PARTY", hashed_email: conversion.emailSha256 });
  if (conversion.phoneSha256) identifiers.push({ user_identifier_source: "FIRST_PARTY", hashed_phone_number: conversion.phoneSha256 });
  return identifiers;
}

/** The outcome one Google Ads error gives its row. */
function outcomeOf(error: AdsError): RowOutcome {
  if (ALREADY_THERE.has(error.code)) return { kind: "accepted", code: error.code };
  const wait = RETRY_AFTER.get(error.code);
  if (wait !== undefined) return { kind: "retry", code: error.code, retryAfterSeconds: error.retryDelaySeconds ?? wait };
  return { kind: "failed", code: error.code, message: error.message };
}

/** Of two errors on one row, the graver decides: failed over retry over accepted; of two waits, the longer. */
function graver(a: RowOutcome, b: RowOutcome): RowOutcome {
  const rank = { accepted: 0, retry: 1, failed: 2 };
  if (rank[a.kind] !== rank[b.kind]) return rank[a.kind] > rank[b.kind] ? a : b;
  return a.kind === "retry" && b.kind === "retry" && b.retryAfterSeconds > a.retryAfterSeconds ? b : a;
}

/** One outcome per row of an RPC that returned: rows without an error were accepted. */
function rowOutcomes(count: number, partialFailure: Status | null | undefined): RowOutcome[] {
  const rows = new Array<RowOutcome | undefined>(count).fill(undefined);
  if (partialFailure) {
    const packed = partialFailure.details?.find((any) => any.type_url?.endsWith(`/${FAILURE_TYPE}`))?.value;
    // Google says some rows failed without saying which: none can count as delivered.
    if (!(packed instanceof Uint8Array)) return rows.map(() => ({ kind: "retry", code: "PARTIAL_FAILURE_UNREADABLE", retryAfterSeconds: TRANSIENT_RETRY_SECONDS }));
    for (const error of decodeFailure(packed)) {
      const outcome = outcomeOf(error);
      const targets = error.index === undefined ? [...rows.keys()] : [error.index];
      for (const i of targets) if (i < count) rows[i] = rows[i] ? graver(rows[i], outcome) : outcome;
    }
  }
  return rows.map((row) => row ?? { kind: "accepted" });
}

/**
 * How a failed RPC ends: the destination needs a person (reauth), wait and send the batch again,
 * or a final error for its rows. A failed RPC is refused as a whole, so it is the destination's
 * when Google's code or status says so; Google's code from the failure when there is one.
 */
function callFailure(error: GrpcError): CallFailure {
  const [trailer] = error.metadata?.get(FAILURE_TRAILER) ?? [];
  const errors = trailer instanceof Buffer ? decodeFailure(trailer) : [];
  const ours = errors.find((e) => OPERATOR_REFUSED.has(e.code));
  if (ours) return { kind: "retry_batch", code: ours.code, retryAfterSeconds: OPERATOR_RETRY_SECONDS };
  const refused = errors.find((e) => GRANT_REFUSED.has(e.code) || DESTINATION_REFUSED.has(e.code));
  if (refused) return { kind: "reauth", code: refused.code };
  if (errors.length > 0) {
    const outcome = outcomeOf(errors[0]);
    if (outcome.kind === "retry") return { kind: "retry_batch", code: outcome.code, retryAfterSeconds: outcome.retryAfterSeconds };
    if (DESTINATION_STATUSES.has(error.code)) return { kind: "reauth", code: errors[0].code };
    return { kind: "failed", code: errors[0].code, message: errors[0].message };
  }
  const name = grpc.status[error.code] ?? `GRPC_STATUS_${error.code}`;
  if (TRANSIENT_STATUSES.has(error.code)) return { kind: "retry_batch", code: name, retryAfterSeconds: TRANSIENT_RETRY_SECONDS };
  if (error.code === grpc.status.RESOURCE_EXHAUSTED) return { kind: "retry_batch", code: name, retryAfterSeconds: QUOTA_RETRY_SECONDS };
  if (DESTINATION_STATUSES.has(error.code)) return { kind: "reauth", code: name };
  return { kind: "failed", code: name, message: error.details ?? error.message };
}

/** The shape GoogleAdsFailure.toObject gives (enums as names, int64 as strings), as far as we read it. */
interface DecodedAdsError {
  error_code?: { error_code?: string; [category: string]: unknown };
  message?: string;
  location?: { field_path_elements?: { index?: number }[] };
  details?: { quota_error_details?: { retry_delay?: { seconds?: string } } };
}

function decodeFailure(bytes: Uint8Array): AdsError[] {
  const { GoogleAdsFailure } = protos.google.ads.googleads.v25.errors;
  const failure = GoogleAdsFailure.toObject(GoogleAdsFailure.decode(bytes), { enums: String, longs: String, oneofs: true }) as {
    errors?: DecodedAdsError[];
  };
  return (failure.errors ?? []).map((error) => {
    // error_code is a oneof over ~190 error enums; its virtual field names the one that is set.
    const category = error.error_code?.error_code;
    const retryDelay = error.details?.quota_error_details?.retry_delay?.seconds;
    return {
      code: category ? String(error.error_code?.[category]) : "UNKNOWN",
      message: error.message ?? "",
      index: error.location?.field_path_elements?.find((element) => element.index !== undefined)?.index,
      retryDelaySeconds: retryDelay === undefined ? undefined : Number(retryDelay),
    };
  });
}

function isGrpcError(error: unknown): error is GrpcError {
  return error instanceof Error && typeof (error as { code?: unknown }).code === "number";
}
