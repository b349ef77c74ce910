/*
 * Delivers one site's due conversions to its destination: claim a batch (lease), send it on
 * the destination's rail, record one outcome per row, repeat until nothing is due. Everything
 * that must survive a crash is in the queue rows; a worker that dies mid-batch loses only its
 * lease, and the re-send carries the same order ids, so Google counts each conversion once.
 */
import { hostname } from "node:os";
import type pg from "pg";
import { DataManagerRail } from "../google/datamanager";
import type { BatchOutcome, Conversion, Destination, Rail, RailClient, Retraction, RowOutcome } from "../google/types";
import { readRefreshToken } from "../vault/credentials";
import type { Vault } from "../vault/vault";
import type { Rails } from "./rails";

export const BATCH_SIZE = 2000;
const LEASE_SECONDS = 300;
/** How often a conversion Google cannot match yet is looked at again (SQL decides when it gives up). */
const AWAIT_CLICK_ID_SECONDS = 6 * 3600;

export interface DeliveryDeps {
  owner: pg.Pool;
  vault: Vault;
  rails: Rails;
  /** Identifies this uploader in locked_by; unique per process and job. */
  worker?: string;
  batchSize?: number;
}

export interface DeliverySummary {
  destination?: string;
  skipped?: string;
  claimed: number;
  accepted: number;
  sent: number;
  retry: number;
  failed: number;
}

interface PayloadRow {
  id: string;
  kind: "conversion" | "retraction";
  order_id: string;
  click_id: string | null;
  click_id_type: "gclid" | "gbraid" | "wbraid" | null;
  conversion_time: string;
  adjustment_time: string;
  value: string;
  currency: string;
  email_sha256: string | null;
  phone_sha256: string | null;
  ad_user_data: "granted" | "denied" | "unspecified";
  ad_personalization: "granted" | "denied" | "unspecified";
  caller_id: string | null;
  call_start_time: string | null;
  /** Set when Google could not match the row: it waits for a click id, or has waited long enough. */
  unmatchable: "AWAITING_CLICK_ID" | "NO_IDENTIFIER" | null;
}

interface Outcome {
  id: string;
  kind: "accepted" | "sent" | "retry" | "failed";
  code?: string;
  message?: string;
  retry_after_seconds?: number;
  request_id?: string;
}

function toConversion(row: PayloadRow): Conversion {
  return {
    rowId: row.id,
    orderId: row.order_id,
    clickId: row.click_id && row.click_id_type ? { type: row.click_id_type, value: row.click_id } : undefined,
    conversionTime: row.conversion_time,
    value: row.value,
    currency: row.currency,
    emailSha256: row.email_sha256 ?? undefined,
    phoneSha256: row.phone_sha256 ?? undefined,
    consent: { adUserData: row.ad_user_data, adPersonalization: row.ad_personalization },
    call: row.caller_id && row.call_start_time ? { callerId: row.caller_id, callStartTime: row.call_start_time } : undefined,
  };
}

/** Per-row outcomes of a batch, as the queue records them. Data Manager's "accepted" means received: sent. */
function outcomesOf(rail: Rail, ids: string[], batch: BatchOutcome): Outcome[] {
  if (batch.kind === "retry_batch") return ids.map((id) => ({ id, kind: "retry", code: batch.code, retry_after_seconds: batch.retryAfterSeconds }));
  if (batch.kind === "reauth") throw new Error("reauth outcomes are handled by the caller");
  return batch.rows.map((row: RowOutcome, index): Outcome => {
    const id = ids[index];
    if (row.kind === "accepted") return { id, kind: rail === "datamanager" && !row.code ? "sent" : "accepted", code: row.code, request_id: row.requestId };
    if (row.kind === "retry") return { id, kind: "retry", code: row.code, retry_after_seconds: row.retryAfterSeconds };
    return { id, kind: "failed", code: row.code, message: row.message };
  });
}

export async function deliverSiteConversions(deps: DeliveryDeps, siteId: string): Promise<DeliverySummary> {
  const { owner } = deps;
  const worker = deps.worker ?? `${hostname()}:${process.pid}:${Date.now().toString(36)}`;
  const summary: DeliverySummary = { claimed: 0, accepted: 0, sent: 0, retry: 0, failed: 0 };

  // A click id learned since the sale reaches the conversions about to be claimed (one waiting
  // for a click id is due every 6 hours; an editor's refresh looks at all of them at once).
  await owner.query("select app_private.refresh_conversion_attribution($1, due_only => true)", [siteId]);

  const { rows: [row] } = await owner.query(
    `select id, rail, customer_id, login_customer_id, conversion_action, status
       from app_public.destinations where site_id = $1 and status <> 'paused'`, [siteId]);
  if (!row) return { ...summary, skipped: "no_destination" };
  summary.destination = row.id;
  if (row.status !== "active") return { ...summary, skipped: row.status };
  const refreshToken = await readRefreshToken(owner, deps.vault, row.id);
  if (!refreshToken) {
    await owner.query("select app_private.mark_destination_needs_reauth($1, 'NO_CREDENTIALS')", [row.id]);
    return { ...summary, skipped: "needs_reauth" };
  }
  const destination: Destination = {
    rail: row.rail, customerId: row.customer_id, loginCustomerId: row.login_customer_id ?? undefined,
    conversionAction: row.conversion_action, refreshToken,
  };
  const rail = deps.rails.railFor(destination.rail);

  if (rail instanceof DataManagerRail) await settleSentRequests(deps, siteId, rail, destination);

  const batchSize = deps.batchSize ?? BATCH_SIZE;
  // One statement claims a batch (lease, destination) and returns it ready to send, as one JSON
  // array: a single JSON.parse costs the event loop a fraction of decoding 2,000 rows field by field.
  const claim = () => observed(owner.query<{ payloads: PayloadRow[] }>(
    "select coalesce(json_agg(p), '[]') as payloads from app_private.claim_conversion_payloads($1, $2, $3, $4, $5) p",
    [siteId, batchSize, worker, LEASE_SECONDS, row.id]).then((result) => result.rows[0].payloads));
  const record = (outcomes: Outcome[], requestId: string | undefined) => observed(owner.query(
    "select app_private.record_upload_outcomes($1, $2, $3::jsonb, $4)",
    [siteId, worker, JSON.stringify(outcomes), requestId ?? null]).then(() => undefined));

  /*
   * Pipelined, because per batch the database and Google each take about as long as the other:
   * while batch N is on its way to Google, batch N+1 is claimed (when N was full, so more may be
   * due) and batch N-1's outcomes are recorded, each on its own connection. Uploads stay one at
   * a time and in claim order, and at most one claim and one record are in flight, so batches
   * are the same consecutive runs of due rows as without the pipeline (two claims at once would
   * share the due rows between them, SKIP LOCKED, in no fixed way). Nothing about exactly-once
   * changes: a row claimed ahead is leased to this worker like any other, just a little earlier;
   * outcomes are recorded only for the rows of their own batch and only while this worker holds
   * their lease; and a batch claimed ahead of a refusal (reauth) is released with the rest, or,
   * after an error, keeps its lease until it expires, like the batch in hand.
   */
  let claiming: Promise<PayloadRow[]> | undefined = claim();
  let recording: Promise<void> | undefined;
  let reauth: string | undefined;
  try {
    while (claiming) {
      const payloads: PayloadRow[] = await claiming;
      claiming = payloads.length === batchSize ? claim() : undefined;
      if (payloads.length === 0) break;
      summary.claimed += payloads.length;

      const sent = await sendBatch(rail, destination, payloads);
      await recording; // one record in flight at a time (and its error surfaces here)
      recording = record(sent.outcomes, sent.requestId);
      for (const outcome of sent.outcomes) summary[outcome.kind]++;
      if (sent.reauth) {
        reauth = sent.reauth;
        break;
      }
    }
    await recording;
    // A batch claimed ahead of a refused one is released below with the rest, so its claim must have landed first.
    await claiming;
  } catch (error) {
    // Let nothing run on after we return.
    await Promise.allSettled([claiming, recording]);
    throw error;
  }
  if (reauth) {
    // Google refused the credentials: nothing more can go until a person sets them again.
    await owner.query("select app_private.mark_destination_needs_reauth($1, $2)", [row.id, reauth]);
    await owner.query("select app_private.release_claimed_conversions($1, $2, $3, $4, 0)",
      [siteId, worker, reauth, "The destination needs new credentials; the conversion waits for them."]);
    return { ...summary, skipped: "needs_reauth" };
  }

  // Come back when the earliest postponed row (or an unsettled Data Manager request) is due.
  await owner.query("select app_private.schedule_next_upload($1)", [siteId]);
  return summary;
}

/**
 * Sends one claimed batch: rows Google cannot match yet are answered here, conversions and
 * retractions go on the rail. Returns one outcome per row it decided, the request id of the
 * upload, and the code when Google refused the credentials (the rows it did not send then stay
 * claimed, for the caller to release).
 */
async function sendBatch(rail: RailClient, destination: Destination, payloads: PayloadRow[]):
    Promise<{ outcomes: Outcome[]; requestId?: string; reauth?: string }> {
  const outcomes: Outcome[] = [];
  const sendable: PayloadRow[] = [];
  for (const payload of payloads) {
    if (payload.unmatchable === "NO_IDENTIFIER") {
      outcomes.push({ id: payload.id, kind: "failed", code: "NO_IDENTIFIER", message: "No Google click id turned up within 7 days and no consented email or phone is known." });
    } else if (payload.unmatchable === "AWAITING_CLICK_ID") {
      outcomes.push({ id: payload.id, kind: "retry", code: "AWAITING_CLICK_ID", message: "Waiting for a click id or a consented email/phone.", retry_after_seconds: AWAIT_CLICK_ID_SECONDS });
    } else {
      sendable.push(payload);
    }
  }

  let reauth: string | undefined;
  const conversions = sendable.filter((p) => p.kind === "conversion");
  const retractions = sendable.filter((p) => p.kind === "retraction");
  let requestId: string | undefined;
  for (const [rows, send] of [
    [conversions, () => rail.uploadConversions(destination, conversions.map(toConversion))],
    [retractions, () => rail.retractConversions(destination, retractions.map((p): Retraction =>
      ({ rowId: p.id, orderId: p.order_id, adjustmentTime: p.adjustment_time })))],
  ] as const) {
    if (rows.length === 0 || reauth) continue;
    const batch = await send();
    if (batch.kind === "reauth") {
      reauth = batch.code;
      continue;
    }
    if (batch.kind === "rows") requestId ??= batch.requestId;
    outcomes.push(...outcomesOf(destination.rail, rows.map((p) => p.id), batch));
  }
  return { outcomes, requestId, reauth };
}

/** The promise, with its rejection marked as handled now: it is awaited later, perhaps after other awaits. */
function observed<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

/** Data Manager accepts a request before it processes it: ask how it went, and record Google's verdict. */
async function settleSentRequests(deps: DeliveryDeps, siteId: string, rail: DataManagerRail, destination: Destination): Promise<void> {
  const { rows } = await deps.owner.query<{ request_id: string }>("select app_private.unsettled_requests($1) as request_id", [siteId]);
  for (const { request_id: requestId } of rows) {
    let status;
    try {
      status = await rail.requestStatus(destination, requestId);
    } catch {
      return; // unreachable or refused now: the next run asks again
    }
    const errors = Object.entries(status.errors).map(([reason, count]) => ({ reason, count }));
    await deps.owner.query("select app_private.settle_request($1, $2, $3, $4::jsonb)", [siteId, requestId, status.status, JSON.stringify(errors)]);
  }
}
