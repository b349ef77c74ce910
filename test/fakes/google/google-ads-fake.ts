/*
 * A loopback stand-in for the Google Ads API's conversion upload services, served over
 * plaintext gRPC from the very .proto files google-ads-node ships (no hand-written proto), so
 * the real client library talks to it unchanged. It checks credentials as Google does, records
 * every request it receives (decoded, with its metadata) and answers as a test programs it:
 * per-row errors as a real partial_failure_error, or whole-call failures with a GoogleAdsFailure
 * in the trailer the client libraries read.
 */
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** The API version google-ads-node 25.x ships; the rail must speak the same one. */
const API = "google.ads.googleads.v25";
const FAILURE_TYPE = `${API}.errors.GoogleAdsFailure`;
const FAILURE_TYPE_URL = `type.googleapis.com/${FAILURE_TYPE}`;
const FAILURE_TRAILER = `${API}.errors.googleadsfailure-bin`;

/** A decoded protobuf message, field names as in the .proto (snake_case), enums as names. */
export type ProtoObject = { [field: string]: any };

/** One Google Ads error: `category` is the ErrorCode oneof field, e.g. "conversion_upload_error". */
export interface FakeError {
  category: string;
  code: string;
  message?: string;
}

export type FakeMethod = "UploadClickConversions" | "UploadCallConversions" | "UploadConversionAdjustments";

export interface RecordedRequest {
  method: FakeMethod;
  request: ProtoObject;
  /** Every metadata entry; binary values as base64. */
  metadata: Record<string, string>;
}

export interface FakeBehaviour {
  /** Decides each row (a ClickConversion, CallConversion or ConversionAdjustment): an error, or undefined to accept it. */
  rowError?: (row: ProtoObject, method: FakeMethod) => FakeError | undefined;
  /** Answer the next N calls with gRPC UNAVAILABLE. */
  unavailableCalls?: number;
  /** Answer every call with RESOURCE_EXHAUSTED and a QuotaError (with a retry delay when given). */
  quotaExhausted?: { retryDelaySeconds?: number };
  /** Answer every call with UNAUTHENTICATED and AuthenticationError OAUTH_TOKEN_REVOKED, whatever the token. */
  tokenRevoked?: boolean;
  /** Answer every call (of `method` only, when given) with this request-level error and gRPC status. */
  callError?: FakeError & { status: grpc.status; method?: FakeMethod };
  /** Answer every call with this gRPC status and no GoogleAdsFailure trailer (as a proxy or the transport might). */
  bareStatus?: grpc.status;
  /** Wait this long before answering. */
  latencyMs?: number;
}

export interface GoogleAdsFakeOptions {
  /** Which access tokens are valid, e.g. OAuthFake.isValidAccessToken. */
  isValidAccessToken(token: string): boolean;
  developerToken: string;
}

export interface GoogleAdsFake {
  /** `127.0.0.1:port`, for GoogleSettings.googleAdsEndpoint (with insecure: true). */
  endpoint: string;
  requests: RecordedRequest[];
  /** Replaces the behaviour; `behave({})` accepts everything again. */
  behave(behaviour: FakeBehaviour): void;
  close(): Promise<void>;
}

function loadProtos(): protoLoader.PackageDefinition {
  const adsNode = path.dirname(require.resolve("google-ads-node/package.json"));
  // google/api and google/rpc protos come from the google-gax that google-ads-node itself uses.
  // google-gax's entry point is build/src/index.js; its protos sit in build/protos.
  const gaxProtos = path.resolve(path.dirname(require.resolve("google-gax", { paths: [adsNode] })), "../protos");
  const apiDir = API.replaceAll(".", "/");
  return protoLoader.loadSync(
    [
      `${apiDir}/services/conversion_upload_service.proto`,
      `${apiDir}/services/conversion_adjustment_upload_service.proto`,
      `${apiDir}/errors/errors.proto`,
    ],
    {
      includeDirs: [path.join(adsNode, "build/protos"), gaxProtos],
      keepCase: true,
      enums: String,
      longs: String,
      // No `oneofs`: proto3 optional fields would otherwise add `_field` entries to every row.
    },
  );
}

export async function startGoogleAdsFake(options: GoogleAdsFakeOptions): Promise<GoogleAdsFake> {
  const protos = loadProtos();
  const failureType = protos[FAILURE_TYPE] as protoLoader.MessageTypeDefinition<ProtoObject, ProtoObject>;
  let behaviour: FakeBehaviour = {};

  function googleAdsError(error: FakeError, index?: number, field?: string): ProtoObject {
    return {
      error_code: { [error.category]: error.code },
      message: error.message ?? `${error.code} (fake)`,
      ...(index === undefined ? {} : { location: { field_path_elements: [{ field_name: field, index }] } }),
    };
  }

  /** A whole-call failure as Google sends it: a gRPC status plus the GoogleAdsFailure trailer. */
  function callFailure(status: grpc.status, errors: ProtoObject[]): grpc.ServiceError {
    const metadata = new grpc.Metadata();
    metadata.set(FAILURE_TRAILER, failureType.serialize({ errors, request_id: "fake-request" }));
    const details = errors.map((e) => e.message).join("; ");
    return Object.assign(new Error(details), { code: status, details, metadata });
  }

  /** The checks and programmed failures that answer a call before its rows are looked at. */
  function refusal(method: FakeMethod, metadata: Record<string, string>): grpc.ServiceError | undefined {
    const unauthenticated = (code: string, message: string) =>
      callFailure(grpc.status.UNAUTHENTICATED, [googleAdsError({ category: "authentication_error", code, message })]);
    if (behaviour.tokenRevoked) return unauthenticated("OAUTH_TOKEN_REVOKED", "The OAuth token has been revoked.");
    const bearer = /^Bearer (\S+)$/.exec(metadata.authorization ?? "");
    if (!bearer) return unauthenticated("OAUTH_TOKEN_HEADER_INVALID", "The OAuth token in the header is not valid.");
    if (!options.isValidAccessToken(bearer[1])) return unauthenticated("OAUTH_TOKEN_INVALID", "The OAuth token is not valid.");
    if (!metadata["developer-token"]) {
      return callFailure(grpc.status.INVALID_ARGUMENT, [
        googleAdsError({ category: "request_error", code: "DEVELOPER_TOKEN_PARAMETER_MISSING" }),
      ]);
    }
    if (metadata["developer-token"] !== options.developerToken) return unauthenticated("DEVELOPER_TOKEN_INVALID", "The developer token is not valid.");
    if (behaviour.unavailableCalls) {
      behaviour.unavailableCalls--;
      return Object.assign(new Error("The service is currently unavailable."), {
        code: grpc.status.UNAVAILABLE,
        details: "The service is currently unavailable.",
        metadata: new grpc.Metadata(),
      });
    }
    if (behaviour.quotaExhausted) {
      const delay = behaviour.quotaExhausted.retryDelaySeconds;
      return callFailure(grpc.status.RESOURCE_EXHAUSTED, [
        {
          ...googleAdsError({ category: "quota_error", code: "RESOURCE_EXHAUSTED", message: "Too many requests." }),
          details: {
            quota_error_details: {
              rate_scope: "DEVELOPER",
              rate_name: "Number of operations for basic access",
              ...(delay === undefined ? {} : { retry_delay: { seconds: String(delay) } }),
            },
          },
        },
      ]);
    }
    const { callError } = behaviour;
    if (callError && (callError.method ?? method) === method) return callFailure(callError.status, [googleAdsError(callError)]);
    if (behaviour.bareStatus !== undefined) {
      const details = `Simulated ${grpc.status[behaviour.bareStatus]}.`;
      return Object.assign(new Error(details), { code: behaviour.bareStatus, details, metadata: new grpc.Metadata() });
    }
    return undefined;
  }

  /** A unary handler: rows with a programmed error go into partial_failure_error, the rest are echoed. */
  function handler(method: FakeMethod, rowsField: string, result: (row: ProtoObject) => ProtoObject) {
    return (call: grpc.ServerUnaryCall<ProtoObject, ProtoObject>, callback: grpc.sendUnaryData<ProtoObject>) => {
      const metadata: Record<string, string> = {};
      for (const [key, value] of Object.entries(call.metadata.getMap())) {
        metadata[key] = typeof value === "string" ? value : value.toString("base64");
      }
      fake.requests.push({ method, request: call.request, metadata });
      setTimeout(() => {
        const refused = refusal(method, metadata);
        if (refused) return callback(refused);
        const rows: ProtoObject[] = call.request[rowsField] ?? [];
        const errors = rows.flatMap((row, index) => {
          const error = behaviour.rowError?.(row, method);
          return error ? [googleAdsError(error, index, rowsField)] : [];
        });
        const failed = new Set(errors.map((e) => e.location.field_path_elements[0].index));
        callback(null, {
          ...(errors.length === 0
            ? {}
            : {
                partial_failure_error: {
                  code: grpc.status.INVALID_ARGUMENT,
                  message: errors.map((e) => e.message).join("; "),
                  // proto-loader packs an object with "@type" into a google.protobuf.Any.
                  details: [{ "@type": FAILURE_TYPE_URL, errors, request_id: "fake-request" }],
                },
              }),
          // Google returns an empty result for each row that failed.
          results: rows.map((row, index) => (failed.has(index) ? {} : result(row))),
          ...(method === "UploadCallConversions" ? {} : { job_id: "1" }),
        });
      }, behaviour.latencyMs ?? 0);
    };
  }

  const server = new grpc.Server();
  server.addService(protos[`${API}.services.ConversionUploadService`] as grpc.ServiceDefinition, {
    UploadClickConversions: handler("UploadClickConversions", "conversions", (row) => ({
      gclid: row.gclid,
      gbraid: row.gbraid,
      wbraid: row.wbraid,
      conversion_action: row.conversion_action,
      conversion_date_time: row.conversion_date_time,
      user_identifiers: row.user_identifiers,
    })),
    UploadCallConversions: handler("UploadCallConversions", "conversions", (row) => ({
      caller_id: row.caller_id,
      call_start_date_time: row.call_start_date_time,
      conversion_action: row.conversion_action,
      conversion_date_time: row.conversion_date_time,
    })),
  });
  server.addService(protos[`${API}.services.ConversionAdjustmentUploadService`] as grpc.ServiceDefinition, {
    UploadConversionAdjustments: handler("UploadConversionAdjustments", "conversion_adjustments", (row) => ({
      order_id: row.order_id,
      conversion_action: row.conversion_action,
      adjustment_date_time: row.adjustment_date_time,
      adjustment_type: row.adjustment_type,
    })),
  });

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  const fake: GoogleAdsFake = {
    endpoint: `127.0.0.1:${port}`,
    requests: [],
    behave(next) {
      behaviour = { ...next };
    },
    async close() {
      // Clients may keep channels open; a fake has nothing in flight worth waiting for.
      server.forceShutdown();
    },
  };
  return fake;
}
