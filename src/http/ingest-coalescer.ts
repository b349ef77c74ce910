/*
 * Group commit for POST /api/sync. A request goes to the database at once while a connection
 * is free for it; requests that arrive while every ingest connection is busy wait here and
 * leave together, as one call of app_private.ingest_requests, when the next connection frees
 * up. Nothing waits on a timer, so a quiet server answers exactly as before, and a busy one
 * pays one commit, one set of locks and one round trip per group instead of per request.
 *
 * While one call is in flight, a free connection takes only a worthwhile group (at least
 * minGroupEvents events waiting); fewer wait for a call to finish. Taking every
 * request the moment a connection frees up made a convoy: the first request back went alone,
 * the burst behind it waited for the next connection as one large, slow group, and most
 * requests rode in large calls while the fixed cost of a call was spent on groups of one.
 *
 * Each request keeps its own outcome. The database admits each one on its own and stores one
 * site's requests in one pass; when that pass fails, it runs them one by one, so a request that
 * fails leaves nothing and the others commit. A request that even then lost a deadlock or a
 * serialization conflict to another group is sent again here, in a transaction of its own.
 */
import type pg from "pg";

export interface IngestRequest {
  site: string;
  events: unknown[];
  origin: string | null;
  clientIp: string | null;
  userAgent: string | null;
}

/** What the database said about one request: its result, or the error it raised (nothing of it stored). */
export type IngestOutcome = { result: unknown } | { code: string; detail?: string; message: string };

export interface CoalescerLimits {
  /** Calls in flight at once (INGEST_CONCURRENCY); more requests than this wait and go out as groups. */
  concurrency: number;
  /** At most this many requests, and this many events, in one group: each transaction stays short. */
  groupRequests?: number;
  groupEvents?: number;
  /**
   * At most this many requests wait for a connection. Past it a request is refused at once: it is
   * answered 500 ingest_unavailable, for the tracker to retry later. Without the bound a stalled
   * database would leave every request's body in memory here until the process ran out.
   */
  queueLimit?: number;
  /** While another call is in flight, a free connection leaves only once this many events wait. */
  minGroupEvents?: number;
}

const GROUP_REQUESTS = 32;
const GROUP_EVENTS = 200;
const QUEUE_LIMIT = 1000; // bodies are at most 64 KiB: at most about 64 MiB waiting
// A call costs about as much as three one-event requests before any request's own work (the
// commit, the round trip, the call's set-up; pgbench on a 2-core machine): a group of 8 such
// requests spends a quarter of its time on that, a group of 1 three quarters. In the benchmark
// (32 connections, one-event requests, two calls in flight) 8 and 12 gave the same throughput,
// 4 less. Counted in events, so one request of a tracker's batch is worth a call of its own.
const MIN_GROUP_EVENTS = 8;

/** The queue is full: the request was not sent to the database, so nothing of it is stored. */
export class IngestQueueFull extends Error {
  constructor(limit: number) {
    super(`${limit} tracker requests are already waiting for a database connection`);
  }
}

// Lost to a concurrent transaction's locks; in a transaction of its own it will go through.
const RETRY_ALONE = new Set(["40P01", "40001"]);

interface Waiting {
  request: IngestRequest;
  resolve(outcome: IngestOutcome): void;
  reject(error: Error): void;
}

export class IngestCoalescer {
  private readonly waiting: Waiting[] = [];
  private waitingEvents = 0;
  private inFlight = 0;

  constructor(private readonly pool: pg.Pool, private readonly globalOrigins: string[], private readonly limits: CoalescerLimits) {}

  /** Rejects only when the database could not be asked (queue full, connection lost, commit failed): then nothing of the request is stored. */
  submit(request: IngestRequest): Promise<IngestOutcome> {
    const limit = this.limits.queueLimit ?? QUEUE_LIMIT;
    if (this.waiting.length >= limit) return Promise.reject(new IngestQueueFull(limit));
    return new Promise((resolve, reject) => {
      this.waiting.push({ request, resolve, reject });
      this.waitingEvents += request.events.length;
      this.dispatch();
    });
  }

  /** Requests waiting for a connection. */
  get queued(): number {
    return this.waiting.length;
  }

  private dispatch(): void {
    const { concurrency, minGroupEvents = MIN_GROUP_EVENTS } = this.limits;
    while (this.inFlight < concurrency && this.waiting.length > 0 && (this.inFlight === 0 || this.waitingEvents >= minGroupEvents)) {
      this.inFlight++;
      void this.send(this.nextGroup());
    }
  }

  /**
   * The connection is handed to the next group before this group's answers are written: writing
   * a response costs the event loop more than the database takes to start the next call, and a
   * connection left idle meanwhile is throughput lost.
   */
  private async send(group: Waiting[]): Promise<void> {
    const { settle, again } = group.length === 1 ? await this.callAlone(group[0]) : await this.callGroup(group);
    if (again.length === 0) this.release();
    for (const answer of settle) answer();
    if (again.length === 0) return;
    // Rare enough to keep the connection for: the conflicts' second attempts, each alone.
    for (const waiting of again) (await this.callAlone(waiting)).settle[0]();
    this.release();
  }

  private release(): void {
    this.inFlight--;
    this.dispatch();
  }

  private nextGroup(): Waiting[] {
    const { groupRequests = GROUP_REQUESTS, groupEvents = GROUP_EVENTS } = this.limits;
    let events = this.waiting[0].request.events.length;
    let size = 1;
    while (size < this.waiting.length && size < groupRequests && events + this.waiting[size].request.events.length <= groupEvents) {
      events += this.waiting[size].request.events.length;
      size++;
    }
    this.waitingEvents -= events;
    return this.waiting.splice(0, size);
  }

  private async callAlone(waiting: Waiting): Promise<Answers> {
    const { site, events, origin, clientIp, userAgent } = waiting.request;
    try {
      // Named, so each pooled connection parses and plans the call once.
      const { rows } = await this.pool.query({
        name: "ingest_events",
        text: "select app_private.ingest_events($1, $2::jsonb, $3, $4, $5, $6) as result",
        values: [site, JSON.stringify(events), origin, clientIp, userAgent, this.globalOrigins],
      });
      return answers([() => waiting.resolve({ result: rows[0].result })]);
    } catch (error) {
      const { code, detail, message } = error as { code?: string; detail?: string; message: string };
      // A SQLSTATE without a severity is not the server's answer but the client's own failure.
      if (code && (error as { severity?: string }).severity) return answers([() => waiting.resolve({ code, detail, message })]);
      return answers([() => waiting.reject(error as Error)]);
    }
  }

  private async callGroup(group: Waiting[]): Promise<Answers> {
    const requests = group.map(({ request }) => ({
      site: request.site, events: request.events, origin: request.origin, client_ip: request.clientIp, user_agent: request.userAgent,
    }));
    let outcomes: IngestOutcome[];
    try {
      const { rows } = await this.pool.query({
        name: "ingest_requests",
        text: "select app_private.ingest_requests($1::jsonb, $2) as outcomes",
        values: [JSON.stringify(requests), this.globalOrigins],
      });
      outcomes = rows[0].outcomes;
      if (!Array.isArray(outcomes) || outcomes.length !== group.length) throw new Error("ingest_requests answered out of step with its group");
    } catch (error) {
      // The group's transaction did not commit, so none of its requests is stored.
      return answers(group.map((waiting) => () => waiting.reject(error as Error)));
    }
    const settle: Array<() => void> = [];
    const again: Waiting[] = [];
    group.forEach((waiting, index) => {
      const outcome = outcomes[index];
      if ("code" in outcome && RETRY_ALONE.has(outcome.code)) again.push(waiting);
      else settle.push(() => waiting.resolve("code" in outcome && !outcome.detail ? { code: outcome.code, message: outcome.message } : outcome));
    });
    return { settle, again };
  }
}

/** A call's answers, not yet given, and the requests it lost to a conflict (to be sent again alone). */
interface Answers {
  settle: Array<() => void>;
  again: Waiting[];
}

function answers(settle: Array<() => void>): Answers {
  return { settle, again: [] };
}
