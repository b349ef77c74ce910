/*
 * Delivers one site's due conversions to its destination: lock a batch in a transaction, send
 * it on the destination's rail, write one outcome per row and commit, repeat until nothing is
 * due. Each conversion is written once, when its outcome is known. A worker that dies mid-batch
 * leaves its rows as they were (its transaction rolls back with its connection), and the
 * re-send carries the same order ids, so Google counts each conversion once.
 */
import type pg from "pg";
import { DataManagerRail } from "../google/datamanager";
import { ReauthRequired } from "../google/oauth";
import type { BatchOutcome, Conversion, Destination, Rail, RailClient, Retraction, RowOutcome } from "../google/types";
import { readRefreshToken } from "../vault/credentials";
import type { Vault } from "../vault/vault";
import type { Rails } from "./rails";

export const BATCH_SIZE = 2000;
/** How long a batch may sit in its transaction with nothing said (an upload that hangs): then the session ends and the rows are due again. */
const LEASE_SECONDS = 300;
/** Connections one delivery holds at once: a batch being locked, one on its way to Google, one being recorded. */
export const CONNECTIONS_PER_DELIVERY = 3;
/** How often a conversion Google cannot match yet is looked at again (SQL decides when it gives up). */
const AWAIT_CLICK_ID_SECONDS = 6 * 3600;

export interface DeliveryDeps {
  owner: pg.Pool;
  vault: Vault;
  rails: Rails;
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

/** A batch locked by its own open transaction on `client`, with its rows' ctids and ids in lock order. */
interface HeldBatch {
  siteId: string;
  ctids: string;
  ids: string[];
  payloads: PayloadRow[];
  /** Ends the transaction and gives the connection back (a connection that failed to end it is closed). */
  end(how: "commit" | "rollback"): Promise<void>;
  client: pg.PoolClient;
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
  const summary: DeliverySummary = { claimed: 0, accepted: 0, sent: 0, retry: 0, failed: 0 };

  // A click id learned since the sale reaches the conversions about to be claimed (one waiting
  // for a click id is due every 6 hours; an editor's refresh looks at all of them at once).
  await owner.query("select app_private.refresh_conversion_attribution($1, due_only => true)", [siteId]);
  // Rows Google gave no processing status for in two days stop looking as if one were coming.
  await owner.query("select app_private.close_unanswered_requests($1)", [siteId]);
  await settleFormerDestinations(deps, siteId);

  // seen_at: the destination's version this run works with (as text: a Date would drop the
  // microseconds). A refusal is only recorded against that version, not newer credentials.
  const { rows: [row] } = await owner.query(
    `select id, rail, customer_id, login_customer_id, conversion_action, status, updated_at::text as seen_at
       from app_public.destinations where site_id = $1 and status <> 'paused'`, [siteId]);
  if (!row) return { ...summary, skipped: "no_destination" };
  summary.destination = row.id;
  if (row.status !== "active") return { ...summary, skipped: row.status };
  const refreshToken = await readRefreshToken(owner, deps.vault, row.id);
  if (!refreshToken) {
    await owner.query("select app_private.mark_destination_needs_reauth($1, 'NO_CREDENTIALS', $2)", [row.id, row.seen_at]);
    return { ...summary, skipped: "needs_reauth" };
  }
  const destination = toDestination(row, refreshToken);
  const rail = deps.rails.railFor(destination.rail);

  if (rail instanceof DataManagerRail) {
    const refused = await settleSentRequests(deps, siteId, rail, destination, row.id);
    if (refused) {
      // The grant is gone: asking about a request needs it as much as sending does.
      await owner.query("select app_private.mark_destination_needs_reauth($1, $2, $3)", [row.id, refused, row.seen_at]);
      return { ...summary, skipped: "needs_reauth" };
    }
  }

  const batchSize = deps.batchSize ?? BATCH_SIZE;
  const hold = () => observed(holdBatch(owner, siteId, batchSize));

  /*
   * Pipelined, because per batch the database and Google each take about as long as the other:
   * while batch N is on its way to Google, batch N+1 is locked (when N was full, so more may be
   * due) and batch N-1's outcomes are written and committed, each in its own transaction. Uploads
   * stay one at a time and in lock order, and at most one lock and one record are in flight, so
   * batches are the same consecutive runs of due rows as without the pipeline (two locks at once
   * would share the due rows between them, SKIP LOCKED, in no fixed way). A batch locked ahead
   * of a refused destination (reauth) is handed back with the rest; after an error every batch
   * still held is rolled back, untouched and due again.
   */
  let holding: Promise<HeldBatch> | undefined = hold();
  let recording: Promise<void> | undefined;
  let inHand: HeldBatch | undefined;
  let reauth: string | undefined;
  try {
    while (holding) {
      inHand = await holding;
      holding = inHand.ids.length === batchSize ? hold() : undefined;
      if (inHand.ids.length === 0) {
        await inHand.end("commit");
        inHand = undefined;
        break;
      }
      summary.claimed += inHand.ids.length;

      const sent = await sendBatch(rail, destination, inHand.payloads);
      await recording; // one record in flight at a time (and its error surfaces here)
      recording = observed(recordBatch(inHand, row.id, sent));
      inHand = undefined;
      for (const outcome of sent.outcomes) summary[outcome.kind]++;
      if (sent.reauth) {
        reauth = sent.reauth;
        break;
      }
    }
    await recording;
    // A batch locked ahead of a refused one goes back unsent, with the refusal's code.
    const ahead = await holding;
    if (ahead) await recordBatch(ahead, row.id, { outcomes: [], reauth });
  } catch (error) {
    // Let nothing run on after we return: batches still held are rolled back, untouched.
    await Promise.allSettled([recording, inHand?.end("rollback"), holding?.then((held) => held.end("rollback"))]);
    throw error;
  }
  if (reauth) {
    // Google refused the destination itself (its grant, account, conversion action or terms):
    // every batch would be refused alike, so nothing more goes until a person acts on it (new
    // credentials, or the destination set active again).
    await owner.query("select app_private.mark_destination_needs_reauth($1, $2, $3)", [row.id, reauth, row.seen_at]);
    return { ...summary, skipped: "needs_reauth" };
  }

  // Come back when the earliest postponed row (or an unsettled Data Manager request) is due.
  await owner.query("select app_private.schedule_next_upload($1)", [siteId]);
  return summary;
}

/**
 * Sends one claimed batch: rows Google cannot match yet are answered here, conversions and
 * retractions go on the rail. Returns one outcome per row it decided, the request id of the
 * upload, and the code when Google refused the destination (the rows it did not send then stay
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
    } else if (payload.kind === "retraction" && payload.caller_id && payload.call_start_time) {
      // Its conversion went as a call conversion, which carries no order id, and an adjustment
      // names its conversion only by order id or click: no API call could reach it.
      outcomes.push({ id: payload.id, kind: "failed", code: "RETRACTION_UNSUPPORTED",
        message: "A call conversion cannot be retracted through Google's API (it has no order id); remove it in Google Ads." });
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

/** Opens a transaction and locks the site's next due rows in it (app_private.lock_conversion_batch). */
async function holdBatch(owner: pg.Pool, siteId: string, limit: number): Promise<HeldBatch> {
  const client = await owner.connect();
  // The connection can be lost while the batch waits on Google (the lease ran out, or the server
  // went): a checked-out client reports that as an event, which must not bring the process down.
  // The next statement on it then fails, and the batch is rolled back by the server.
  const lost = (): void => undefined;
  client.on("error", lost);
  let ended = false;
  const end = async (how: "commit" | "rollback") => {
    if (ended) return;
    ended = true;
    try {
      await client.query(how);
    } catch (error) {
      client.release(error as Error);
      throw error;
    } finally {
      client.off("error", lost);
    }
    client.release();
  };
  try {
    await client.query("begin");
    const { rows: [locked] } = await client.query<{ ctids: string; ids: string[]; payloads: PayloadRow[] }>(
      "select ctids, ids, payloads from app_private.lock_conversion_batch($1, $2, $3)", [siteId, limit, LEASE_SECONDS]);
    return { ...locked, siteId, client, end };
  } catch (error) {
    await end("rollback").catch(() => undefined);
    throw error;
  }
}

/**
 * Writes a held batch's outcomes and commits. Rows without an outcome (not sent: the
 * destination was refused first) go back due with the refusal's code, their attempt uncounted.
 */
async function recordBatch(batch: HeldBatch, destinationId: string,
    { outcomes, requestId, reauth }: { outcomes: Outcome[]; requestId?: string; reauth?: string }): Promise<void> {
  const byId = new Map(outcomes.map((outcome) => [outcome.id, outcome]));
  const unsent = reauth
    ? { code: reauth, message: "Google refused the destination; the conversion waits until a person sets it right." }
    : { code: "NOT_SENT", message: "The upload stopped before this conversion was sent." };
  const n = batch.ids.length;
  const kinds = new Array<string>(n), codes = new Array<string | null>(n), messages = new Array<string | null>(n);
  const retryAfter = new Array<number | null>(n), requestIds = new Array<string | null>(n);
  batch.ids.forEach((id, index) => {
    const outcome = byId.get(id);
    kinds[index] = outcome?.kind ?? "released";
    codes[index] = outcome ? outcome.code ?? null : unsent.code;
    messages[index] = outcome ? outcome.message ?? null : unsent.message;
    retryAfter[index] = outcome ? outcome.retry_after_seconds ?? null : 0;
    requestIds[index] = outcome?.request_id ?? null;
  });
  try {
    await batch.client.query(
      "select app_private.record_batch_outcomes($1, $2, $3::tid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::integer[], $9::text[], $10)",
      [batch.siteId, destinationId, batch.ctids, batch.ids, kinds, codes, messages, retryAfter, requestIds, requestId ?? null]);
  } catch (error) {
    await batch.end("rollback").catch(() => undefined);
    throw error;
  }
  await batch.end("commit");
}

/** The promise, with its rejection marked as handled now: it is awaited later, perhaps after other awaits. */
function observed<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

/**
 * Data Manager accepts a request before it processes it: ask how it went, and record Google's
 * verdict. Returns Google's code when the token endpoint refused the destination's grant.
 */
async function settleSentRequests(deps: DeliveryDeps, siteId: string, rail: DataManagerRail, destination: Destination,
    destinationId: string): Promise<string | undefined> {
  const { rows } = await deps.owner.query<{ request_id: string }>(
    "select app_private.unsettled_requests($1, $2) as request_id", [siteId, destinationId]);
  for (const { request_id: requestId } of rows) {
    let status;
    try {
      status = await rail.requestStatus(destination, requestId);
    } catch (error) {
      if (error instanceof ReauthRequired) return error.code;
      return undefined; // unreachable or out of quota now: the next run asks again
    }
    const errors = Object.entries(status.errors).map(([reason, count]) => ({ reason, count }));
    await deps.owner.query("select app_private.settle_request($1, $2, $3, $4::jsonb)", [siteId, requestId, status.status, JSON.stringify(errors)]);
  }
}

/**
 * A Data Manager destination the site has paused (moved away from, perhaps to Google Ads) still
 * has Google's verdicts coming on what it sent: ask with its own credentials. A refused grant is
 * left as it is: nobody delivers through it, and its rows end as NO_PROCESSING_STATUS in time.
 */
async function settleFormerDestinations(deps: DeliveryDeps, siteId: string): Promise<void> {
  const { rows } = await deps.owner.query<DestinationRow>(
    `select d.id, d.rail, d.customer_id, d.login_customer_id, d.conversion_action from app_public.destinations d
      where d.id in (select app_private.former_destinations_awaiting_status($1))`, [siteId]);
  const rail = deps.rails.railFor("datamanager");
  if (!(rail instanceof DataManagerRail)) return;
  for (const former of rows) {
    const refreshToken = await readRefreshToken(deps.owner, deps.vault, former.id);
    if (refreshToken) await settleSentRequests(deps, siteId, rail, toDestination(former, refreshToken), former.id);
  }
}

/** A destination's row as read from app_public.destinations. */
interface DestinationRow {
  id: string;
  rail: Rail;
  customer_id: string;
  login_customer_id: string | null;
  conversion_action: string;
}

/** Where a rail sends: the destination's ids, with its decrypted refresh token. */
function toDestination(row: DestinationRow, refreshToken: string): Destination {
  return {
    rail: row.rail, customerId: row.customer_id, loginCustomerId: row.login_customer_id ?? undefined,
    conversionAction: row.conversion_action, refreshToken,
  };
}
