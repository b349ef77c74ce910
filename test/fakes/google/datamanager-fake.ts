/*
 * A loopback stand-in for Google's Data Manager API (IngestionService over plaintext gRPC),
 * served from the very protos @google-ads/datamanager ships, so the rail is tested through the
 * real client library and the real wire format. Like Google it checks the bearer token, refuses
 * a whole request when one event is bad (with ErrorInfo and BadRequest details), and hands out a
 * request id whose status can be fetched. Tests read what it received and tell it to misbehave.
 */
import { randomUUID } from "node:crypto";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
// protobufjs as re-exported by the client's runtime, only to encode google.rpc.Status details.
import { protobuf } from "google-gax";

const DATAMANAGER_PROTOS = path.join(path.dirname(require.resolve("@google-ads/datamanager")), "../protos");
const GAX_PROTOS = path.join(path.dirname(require.resolve("google-gax")), "../protos");

/** The decoded requests, as plain objects with the protos' own (snake_case) field names. */
export interface FakeProductAccount {
  account_id?: string;
  account_type?: string;
}
export interface FakeDestination {
  operating_account?: FakeProductAccount;
  login_account?: FakeProductAccount;
  product_destination_id?: string;
}
export interface FakeEvent {
  transaction_id?: string;
  /** int64 seconds arrive as a decimal string. */
  event_timestamp?: { seconds?: string; nanos?: number };
  conversion_value?: number;
  currency?: string;
  ad_identifiers?: { gclid?: string; gbraid?: string; wbraid?: string };
  user_data?: { user_identifiers?: { email_address?: string; phone_number?: string }[] };
  consent?: { ad_user_data?: string; ad_personalization?: string };
}
export interface FakeIngestEventsRequest {
  destinations?: FakeDestination[];
  events?: FakeEvent[];
  encoding?: string;
  validate_only?: boolean;
}

export interface DataManagerBehaviour {
  /** An ErrorReason name to refuse any request containing this event with (INVALID_ARGUMENT), or undefined. */
  rejectEvent?: (event: FakeEvent) => string | undefined;
  /** Answer `times` IngestEvents calls with this status (UNAVAILABLE, RESOURCE_EXHAUSTED, ...), after letting `after` calls through. */
  failNext?: { code: grpc.status; times: number; after?: number };
  /** Delay before every answer. */
  latencyMs?: number;
  /** Processing errors RetrieveRequestStatus reports (then PARTIAL_SUCCESS), by ProcessingErrorReason name. */
  processingErrors?: Record<string, number>;
  /** A status RetrieveRequestStatus answers every call with while set (UNAVAILABLE, RESOURCE_EXHAUSTED, ...). */
  failStatus?: grpc.status;
  /** RetrieveRequestStatus says PROCESSING: Google has not finished with the request. */
  processing?: boolean;
}

export interface DataManagerFakeOptions {
  /** Whether a bearer token is one Google would honour, e.g. OAuthFake.isValidAccessToken. */
  isValidAccessToken: (token: string) => boolean;
}

export interface DataManagerFake {
  /** `127.0.0.1:port`, for settings.dataManagerEndpoint with insecure: true. */
  endpoint: string;
  /** Every IngestEvents request that passed authentication, refused or not. */
  requests: FakeIngestEventsRequest[];
  /** The ones answered with a request id. */
  accepted: FakeIngestEventsRequest[];
  /** Calls refused as UNAUTHENTICATED (never recorded in `requests`). */
  unauthenticated: number;
  /** The request id of every authenticated RetrieveRequestStatus call, answered or not. */
  statusAsked: string[];
  behave(behaviour: DataManagerBehaviour): void;
  /** Forget recorded requests and behaviour. */
  reset(): void;
  close(): Promise<void>;
}

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: false,
  includeDirs: [DATAMANAGER_PROTOS, GAX_PROTOS],
};

export async function startDataManagerFake(options: DataManagerFakeOptions): Promise<DataManagerFake> {
  const definition = protoLoader.loadSync("google/ads/datamanager/v1/ingestion_service.proto", LOADER_OPTIONS);
  const { v1 } = (grpc.loadPackageDefinition(definition) as unknown as {
    google: { ads: { datamanager: { v1: { IngestionService: grpc.ServiceClientConstructor } } } };
  }).google.ads.datamanager;
  const details = statusDetailsEncoder();

  let behaviour: DataManagerBehaviour = {};
  const processed = new Map<string, { destination: FakeDestination | undefined; records: number }>();
  const server = new grpc.Server();

  const fake: DataManagerFake = {
    endpoint: "",
    requests: [],
    accepted: [],
    unauthenticated: 0,
    statusAsked: [],
    behave(next) {
      // A copy: the fake counts failNext down.
      behaviour = { ...behaviour, ...next, ...(next.failNext ? { failNext: { ...next.failNext } } : {}) };
    },
    reset() {
      behaviour = {};
      fake.requests.length = 0;
      fake.accepted.length = 0;
      fake.unauthenticated = 0;
      fake.statusAsked.length = 0;
      processed.clear();
    },
    close: async () => {
      server.forceShutdown();
    },
  };

  /** Latency, then the bearer token: what Google does before it looks at a request. */
  async function admit(call: grpc.ServerUnaryCall<unknown, unknown>): Promise<Partial<grpc.StatusObject> | undefined> {
    if (behaviour.latencyMs) await sleep(behaviour.latencyMs);
    const header = call.metadata.get("authorization")[0];
    const token = typeof header === "string" && header.startsWith("Bearer ") ? header.slice("Bearer ".length) : "";
    if (token && options.isValidAccessToken(token)) return undefined;
    fake.unauthenticated++;
    return { code: grpc.status.UNAUTHENTICATED, details: "Request had invalid authentication credentials." };
  }

  server.addService(v1.IngestionService.service, {
    async IngestEvents(call: grpc.ServerUnaryCall<FakeIngestEventsRequest, unknown>, callback: grpc.sendUnaryData<unknown>) {
      const refused = await admit(call);
      if (refused) return callback(refused);
      const request = call.request;
      fake.requests.push(request);

      const failure = behaviour.failNext;
      if (failure && failure.times > 0) {
        if (failure.after) {
          failure.after--;
        } else {
          failure.times--;
          return callback({ code: failure.code, details: `Simulated ${grpc.status[failure.code]}.` });
        }
      }
      const problem = checkRequest(request, behaviour.rejectEvent);
      if (problem) return callback(details.invalidArgument(problem.reason, problem.field, problem.description));

      const requestId = randomUUID();
      processed.set(requestId, { destination: request.destinations?.[0], records: request.events?.length ?? 0 });
      fake.accepted.push(request);
      callback(null, { request_id: requestId });
    },

    async RetrieveRequestStatus(call: grpc.ServerUnaryCall<{ request_id?: string }, unknown>, callback: grpc.sendUnaryData<unknown>) {
      const refused = await admit(call);
      if (refused) return callback(refused);
      fake.statusAsked.push(call.request.request_id ?? "");
      if (behaviour.failStatus !== undefined) {
        return callback({ code: behaviour.failStatus, details: `Simulated ${grpc.status[behaviour.failStatus]}.` });
      }
      const request = processed.get(call.request.request_id ?? "");
      if (!request) return callback(details.invalidArgument("INVALID_REQUEST_ID", "request_id", "No request with this id."));
      const errors = Object.entries(behaviour.processingErrors ?? {});
      callback(null, {
        request_status_per_destination: [{
          destination: request.destination,
          request_status: behaviour.processing ? "PROCESSING" : errors.length > 0 ? "PARTIAL_SUCCESS" : "SUCCESS",
          events_ingestion_status: { record_count: String(request.records) },
          error_info: { error_counts: errors.map(([reason, count]) => ({ reason, record_count: String(count) })) },
        }],
      });
    },
  });

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
  fake.endpoint = `127.0.0.1:${port}`;
  return fake;
}

/** The checks Google makes on a whole request; the first problem found, with its field path. */
function checkRequest(request: FakeIngestEventsRequest, rejectEvent: DataManagerBehaviour["rejectEvent"]) {
  const destinations = request.destinations ?? [];
  const events = request.events ?? [];
  if (destinations.length === 0 || destinations.length > 10) {
    return { reason: "TOO_MANY_DESTINATIONS", field: "destinations", description: "Send one to ten destinations." };
  }
  for (const [i, destination] of destinations.entries()) {
    if (!destination.operating_account?.account_id || !destination.product_destination_id) {
      return { reason: "INVALID_DESTINATION", field: `destinations[${i}]`, description: "operating_account and product_destination_id are required." };
    }
  }
  if (events.length === 0 || events.length > 2000) {
    return { reason: "TOO_MANY_EVENTS", field: "events", description: "Send 1 to 2000 events." };
  }
  for (const [i, event] of events.entries()) {
    if (!event.event_timestamp?.seconds) {
      return { reason: "REQUIRED_FIELD_MISSING", field: `events[${i}].event_timestamp`, description: "event_timestamp is required." };
    }
    for (const identifier of event.user_data?.user_identifiers ?? []) {
      const hashed = identifier.email_address ?? identifier.phone_number ?? "";
      if (request.encoding !== "HEX" || !/^[0-9a-f]{64}$/.test(hashed)) {
        return { reason: "INVALID_SHA256_FORMAT", field: `events[${i}].user_data`, description: "Identifiers must be hex SHA-256 digests with encoding HEX." };
      }
    }
    const reason = rejectEvent?.(event);
    if (reason) return { reason, field: `events[${i}]`, description: `The event ${event.transaction_id ?? ""} is invalid.` };
  }
  return undefined;
}

/** google.rpc.Status with ErrorInfo and BadRequest details, in the trailer Google's libraries read. */
function statusDetailsEncoder() {
  const root = protobuf.loadSync([path.join(GAX_PROTOS, "google/rpc/status.proto"), path.join(GAX_PROTOS, "google/rpc/error_details.proto")]);
  const Status = root.lookupType("google.rpc.Status");
  const ErrorInfo = root.lookupType("google.rpc.ErrorInfo");
  const BadRequest = root.lookupType("google.rpc.BadRequest");
  const pack = (type: protobuf.Type, value: object) => ({
    type_url: `type.googleapis.com/${type.fullName.slice(1)}`,
    value: type.encode(type.fromObject(value)).finish(),
  });
  return {
    invalidArgument(reason: string, field: string, description: string): Partial<grpc.StatusObject> {
      const message = `Request contains an invalid argument (${reason}).`;
      const status = Status.fromObject({
        code: grpc.status.INVALID_ARGUMENT,
        message,
        details: [
          pack(ErrorInfo, { reason, domain: "datamanager.googleapis.com" }),
          pack(BadRequest, { fieldViolations: [{ field, description }] }),
        ],
      });
      const metadata = new grpc.Metadata();
      metadata.set("grpc-status-details-bin", Buffer.from(Status.encode(status).finish()));
      return { code: grpc.status.INVALID_ARGUMENT, details: message, metadata };
    },
  };
}
