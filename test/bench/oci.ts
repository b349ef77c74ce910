/*
 * `npm run bench -- oci`: offline conversions delivered to Google through the loopback fakes,
 * measured beside the fake called directly, in the same run, on the same machine:
 *   ours      N pending conversions (sales confirmed with confirm_sale_and_enqueue, spread over
 *             --sites sites, each with a destination on the rail and a sealed refresh token)
 *             delivered end to end by deliverSiteConversions, as many sites at once as one worker
 *             process runs upload jobs (--concurrency): refresh attribution, claim ≤ 2,000 under a
 *             lease, payloads built in SQL, the real client library over gRPC, outcomes recorded,
 *             until nothing is due;
 *   baseline  the same conversions (the very payloads ours will send, read beforehand), held in
 *             memory as Conversion[] batches of 2,000 and sent with the same rail client's
 *             uploadConversions against the same fake, with no database at all: the ceiling.
 * Per rail (Google Ads API, Data Manager API): one small unmeasured warm-up round, then --runs
 * measured rounds, each on freshly seeded sites; the best run of each side gives the ratio.
 * Afterwards every round checks exactness: every queue row accepted (Google Ads) or sent (Data
 * Manager), claimed once, and the fake received each order id exactly once, the same set the
 * queue holds (SHA-256 of the sorted order ids on both sides).
 *
 * The fakes (OAuth, Google Ads, Data Manager) run in a child process by default, as Google is
 * elsewhere: their decoding does not compete with our event loop (--fakes inline puts them in
 * this process). Both fakes keep every request they receive in memory; nothing here can turn
 * that off, so the rows are collected and forgotten after each side of each round.
 * Time is attributed roughly: the owner pool's queries are timed by statement (claim, payloads,
 * record, ...) and the rail's uploadConversions calls (encode, gRPC round trip, fake, decode).
 * Progress goes to stderr; one JSON line of figures goes to stdout. Exit 1 when a target fails.
 */
import "../../src/polyfills";
import { fork, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import os from "node:os";
import { performance } from "node:perf_hooks";
import type pg from "pg";
import { CONNECTIONS_PER_DELIVERY, type DeliverySummary } from "../../src/delivery/deliver";
import type { Rails } from "../../src/delivery/rails";
import type { Conversion, Destination, GoogleSettings, Rail, RailClient } from "../../src/google/types";
import { WORKER_CONCURRENCY } from "../../src/worker/runner";
import { dropBenchDatabase, finishReport, machineInfo, numberOption, parseBenchArgs, progressLog, round, UsageError } from "./common";

const BENCH_DATABASE = "opsmantik_bench_oci";
const CHILD_ROLE = "OPSMANTIK_BENCH_OCI_CHILD";
const DEVELOPER_TOKEN = "bench-oci-developer-token";
const CUSTOMER_ID = "123-456-7890";
const LOGIN_CUSTOMER_ID = "111-222-3333";
const CONVERSION_ACTION = "987654321";
const TIMEZONE = "Europe/Istanbul";
const CURRENCY = "TRY";
/** What deliverSiteConversions locks per batch (its BATCH_SIZE) and what the baseline sends per call. */
const BATCH = 2000;
/** Sales confirmed per seeding statement (each its own transaction). */
const SEED_CHUNK = 1000;
/** Connections confirming sales at once (on disjoint sites). */
const SEED_CONNECTIONS = Math.max(1, Math.min(4, os.cpus().length));
const SEED_LOG_EVERY = 10_000;
const WARMUP_SITES = 2;

const TARGETS = {
  ratio_min: 0.5, // conversions/s of ours ÷ conversions/s of the fake called directly, per rail
};

const RAILS: Rail[] = ["google_ads", "datamanager"];
/** The status a delivered row ends in: Data Manager's "accepted" means received (sent), Google Ads' means accepted. */
const DELIVERED: Record<Rail, string> = { google_ads: "accepted", datamanager: "sent" };

const USAGE = `usage: npm run bench -- oci [--conversions N] [--sites N] [--rail google_ads|datamanager|both] [--runs N]
                             [--warmup N] [--concurrency N] [--fakes child|inline] [--keep]
  --conversions N   pending conversions delivered per measured run and rail (default 100000)
  --sites N         sites they are spread over, one destination each (default 10)
  --rail R          google_ads, datamanager or both (default both)
  --runs N          measured runs of each side per rail, after one warm-up round (default 1)
  --warmup N        conversions of the unmeasured warm-up round (default 4000; 0: none)
  --concurrency N   sites delivered at once, and batch streams of the baseline (default ${WORKER_CONCURRENCY},
                    what one worker process runs at once)
  --fakes F         where the Google fakes run: child (another process, default) or inline (this one)
  --keep            keep the ${BENCH_DATABASE} database afterwards
Prints progress on stderr and one JSON line on stdout; exits 1 when a target is missed.
`;

interface Options {
  conversions: number;
  sites: number;
  rails: Rail[];
  runs: number;
  warmup: number;
  concurrency: number;
  fakes: "child" | "inline";
  keep: boolean;
}

function parseOptions(args: string[]): Options | "help" {
  const values = parseBenchArgs(args, {
    conversions: { type: "string" }, sites: { type: "string" }, rail: { type: "string" }, runs: { type: "string" },
    warmup: { type: "string" }, concurrency: { type: "string" }, fakes: { type: "string" }, keep: { type: "boolean" },
  });
  if (values === "help") return "help";
  const rail = values.rail ?? "both";
  if (rail !== "both" && !RAILS.includes(rail as Rail)) throw new UsageError(`--rail must be google_ads, datamanager or both (got "${rail}")`);
  const fakes = values.fakes ?? "child";
  if (fakes !== "child" && fakes !== "inline") throw new UsageError(`--fakes must be child or inline (got "${fakes}")`);
  const conversions = numberOption("conversions", values.conversions, 100_000, 1);
  return {
    conversions,
    sites: Math.min(numberOption("sites", values.sites, 10, 1), conversions),
    rails: rail === "both" ? RAILS : [rail as Rail],
    runs: numberOption("runs", values.runs, 1, 1),
    warmup: numberOption("warmup", values.warmup, 4000, 0),
    concurrency: numberOption("concurrency", values.concurrency, WORKER_CONCURRENCY, 1),
    fakes,
    keep: values.keep === true,
  };
}

const { log, started } = progressLog("oci");
const fmt = (n: number) => Math.round(n).toLocaleString("en");
const sha256Hex = (text: string) => createHash("sha256").update(text, "utf8").digest("hex");

/* ------------------------------------------------------------------ the fakes */

/** What a fake received since it last forgot: requests, rows and their order ids. */
interface FakeReceipt {
  requests: number;
  /** Data Manager requests refused as a whole (Google Ads answers per row instead). */
  refused_requests: number;
  rows: number;
  distinct_order_ids: number;
  /** SHA-256 of the sorted order ids, one a line: compared with the queue's. */
  order_ids_sha256: string;
  oauth_token_requests: number;
}

interface Fakes {
  endpoints: { googleAds: string; dataManager: string; oauth: string };
  /** The pid of the process the fakes run in. */
  pid: number;
  grant(refreshToken: string): Promise<void>;
  /** What the rail's fake received since the last call, then forgets it (the fakes keep every request in memory). */
  collect(rail: Rail): Promise<FakeReceipt>;
  close(): Promise<void>;
}

function receiptOf(orderIds: string[], requests: number, refused: number, oauthRequests: number): FakeReceipt {
  const sorted = [...orderIds].sort();
  let distinct = 0;
  for (let i = 0; i < sorted.length; i++) if (i === 0 || sorted[i] !== sorted[i - 1]) distinct++;
  return {
    requests, refused_requests: refused, rows: orderIds.length, distinct_order_ids: distinct,
    order_ids_sha256: sha256Hex(sorted.join("\n")), oauth_token_requests: oauthRequests,
  };
}

/**
 * The three fakes in this process. require(), not import(): in the child, tsx's CommonJS hooks
 * compile TypeScript for require only (a dynamic import() there is Node's own).
 */
async function startFakesHere(): Promise<Fakes> {
  const { startOAuthFake } = require("../fakes/google/oauth-fake") as typeof import("../fakes/google/oauth-fake");
  const { startGoogleAdsFake } = require("../fakes/google/google-ads-fake") as typeof import("../fakes/google/google-ads-fake");
  const { startDataManagerFake } = require("../fakes/google/datamanager-fake") as typeof import("../fakes/google/datamanager-fake");
  const oauth = await startOAuthFake();
  const isValidAccessToken = (token: string) => oauth.isValidAccessToken(token);
  const ads = await startGoogleAdsFake({ developerToken: DEVELOPER_TOKEN, isValidAccessToken });
  const dm = await startDataManagerFake({ isValidAccessToken });
  let oauthSeen = 0;
  return {
    endpoints: { googleAds: ads.endpoint, dataManager: dm.endpoint, oauth: oauth.url },
    pid: process.pid,
    async grant(refreshToken) {
      oauth.grant(refreshToken);
    },
    async collect(rail) {
      const oauthRequests = oauth.requests - oauthSeen;
      oauthSeen = oauth.requests;
      if (rail === "google_ads") {
        const orderIds: string[] = [];
        for (const { method, request } of ads.requests) {
          if (method !== "UploadClickConversions") continue;
          for (const row of request.conversions ?? []) orderIds.push(String(row.order_id));
        }
        const requests = ads.requests.length;
        ads.requests.length = 0;
        return receiptOf(orderIds, requests, 0, oauthRequests);
      }
      const orderIds = dm.accepted.flatMap((request) => (request.events ?? []).map((event) => String(event.transaction_id)));
      const requests = dm.requests.length;
      const refused = dm.requests.length - dm.accepted.length;
      dm.reset();
      return receiptOf(orderIds, requests, refused, oauthRequests);
    },
    async close() {
      await ads.close();
      await dm.close();
      await oauth.close();
    },
  };
}

type FakeRequest = { op: "grant"; refreshToken: string } | { op: "collect"; rail: Rail } | { op: "close" };
type FakeCall = FakeRequest & { id: number };
type FakeAnswer = { id: number; result?: unknown; error?: string };

/** Child side: the fakes, answering the parent's calls over IPC. */
async function serveFakesChild(): Promise<void> {
  const fakes = await startFakesHere();
  process.on("message", async (call: FakeCall) => {
    const answer = (result: unknown) => process.send!({ id: call.id, result } satisfies FakeAnswer);
    try {
      if (call.op === "grant") answer(await fakes.grant(call.refreshToken));
      else if (call.op === "collect") answer(await fakes.collect(call.rail));
      else {
        await fakes.close();
        answer(null);
        process.exit(0);
      }
    } catch (error) {
      process.send!({ id: call.id, error: error instanceof Error ? error.stack ?? error.message : String(error) } satisfies FakeAnswer);
    }
  });
  process.on("disconnect", () => process.exit(0)); // the parent went away
  process.send!({ ready: true, endpoints: fakes.endpoints });
}

/** The fakes in a child process, compiled by tsx's CommonJS hooks (as export.ts starts its server). */
async function startFakesChild(): Promise<Fakes> {
  const child: ChildProcess = fork(__filename, [], {
    env: { ...process.env, [CHILD_ROLE]: "fakes" },
    execArgv: ["--require", require.resolve("tsx/cjs")],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const endpoints = await new Promise<Fakes["endpoints"]>((resolve, reject) => {
    child.once("message", (message: { endpoints: Fakes["endpoints"] }) => resolve(message.endpoints));
    child.once("exit", (code) => reject(new Error(`the fakes' process exited with code ${code} before starting`)));
  });
  let nextId = 0;
  const waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  child.on("message", (answer: FakeAnswer) => {
    const call = waiting.get(answer.id);
    if (!call) return;
    waiting.delete(answer.id);
    if (answer.error) call.reject(new Error(`fakes: ${answer.error}`));
    else call.resolve(answer.result);
  });
  child.on("exit", (code) => {
    for (const call of waiting.values()) call.reject(new Error(`the fakes' process exited with code ${code}`));
    waiting.clear();
  });
  const ask = <T>(request: FakeRequest): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = ++nextId;
      waiting.set(id, { resolve: resolve as (value: unknown) => void, reject });
      child.send({ ...request, id } satisfies FakeCall);
    });
  return {
    endpoints,
    pid: child.pid!,
    grant: (refreshToken) => ask<void>({ op: "grant", refreshToken }),
    collect: (rail) => ask<FakeReceipt>({ op: "collect", rail }),
    async close() {
      if (child.exitCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      const timer = setTimeout(() => child.kill(), 10_000);
      await ask<null>({ op: "close" }).catch(() => undefined);
      await exited;
      clearTimeout(timer);
    },
  };
}

/* ------------------------------------------------------------------ where the time goes */

const SQL_BUCKETS: [string, RegExp][] = [
  ["payloads", /lock_conversion_batch|conversion_payloads/],
  ["record_outcomes", /record_upload_outcomes|record_batch_outcomes/],
  ["commit", /^commit$/],
  ["refresh_attribution", /refresh_conversion_attribution/],
  ["reschedule", /enqueue_upload/],
];

/** Milliseconds and calls per bucket, summed over everything in flight. */
class Timings {
  ms: Record<string, number> = {};
  calls: Record<string, number> = {};

  add(bucket: string, ms: number): void {
    this.ms[bucket] = (this.ms[bucket] ?? 0) + ms;
    this.calls[bucket] = (this.calls[bucket] ?? 0) + 1;
  }

  reset(): void {
    this.ms = {};
    this.calls = {};
  }
}

type Query = (text: string, values?: unknown[], callback?: unknown) => Promise<pg.QueryResult>;

/** Times every query of a pool or client by what it is (the statement's text), without changing what it does. */
function timeQueries(queryable: pg.Pool | pg.PoolClient, timings: Timings): void {
  const query = queryable.query.bind(queryable) as Query;
  (queryable as unknown as { query: Query }).query = async (text, values, callback) => {
    // The pool's own use of a client (pool.query, with a callback) is timed by the pool's wrapper.
    if (callback !== undefined) return query(text, values, callback);
    const began = performance.now();
    try {
      return await query(text, values);
    } finally {
      const bucket = SQL_BUCKETS.find(([, pattern]) => pattern.test(text))?.[0] ?? "other_sql";
      timings.add(bucket, performance.now() - began);
    }
  };
}

/** Times the pool's own queries and those of every connection it hands out (a delivery's batch transactions). */
function timePool(pool: pg.Pool, timings: Timings): void {
  timeQueries(pool, timings);
  pool.on("connect", (client) => timeQueries(client, timings));
}

/** Times a rail client's uploadConversions (on the instance makeRails hands out, so deliverSiteConversions' calls count too). */
function timeRail(rail: RailClient, timings: Timings): void {
  const upload = rail.uploadConversions.bind(rail);
  rail.uploadConversions = async (destination, conversions) => {
    const began = performance.now();
    try {
      return await upload(destination, conversions);
    } finally {
      timings.add("upload_rpc", performance.now() - began);
    }
  };
}

/** Times the OAuth token requests (global fetch to the token endpoint): part of uploadConversions when a site's token is not cached yet. */
function timeTokenFetches(tokenUrl: string, timings: Timings): void {
  const original = globalThis.fetch;
  globalThis.fetch = async (input, init) => {
    const began = performance.now();
    try {
      return await original(input, init);
    } finally {
      const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
      if (url.startsWith(tokenUrl)) timings.add("oauth_fetch", performance.now() - began);
    }
  };
}

/* ------------------------------------------------------------------ rounds */

interface Site {
  id: string;
  destination: Destination;
}

interface Side {
  seconds: number;
  conversions_per_s: number;
  /** uploadConversions calls. */
  batches: number;
  /** Summed milliseconds per bucket (overlapping when --concurrency > 1). */
  breakdown_ms: Record<string, number>;
  /** Milliseconds per batch of each bucket. */
  per_batch_ms: Record<string, number>;
}

interface Round {
  label: string;
  rail: Rail;
  conversions: number;
  sites: number;
  seed: { seconds: number; rows_per_s: number; vacuum_analyze_checkpoint_s: number; prebuild_s: number };
  ours: Side & { summary: Omit<DeliverySummary, "destination" | "skipped">; skipped: string[]; locks: number };
  baseline: Side & { outcomes: Record<string, number> };
  checks: {
    queue_by_status: Record<string, number>;
    attempts: { min: number; max: number };
    queue_order_ids_sha256: string;
    ours_fake: FakeReceipt;
    baseline_fake: FakeReceipt;
    destinations_active: boolean;
    ours_exactly_once: boolean;
    baseline_exactly_once: boolean;
  };
}

interface Bench {
  root: pg.Client;
  /** Superuser connections for seeding. */
  seedPool: pg.Pool;
  owner: pg.Pool;
  rails: Rails;
  vault: import("../../src/vault/vault").Vault;
  fakes: Fakes;
  ownerUserId: string;
  concurrency: number;
  deliver: typeof import("../../src/delivery/deliver").deliverSiteConversions;
  storeRefreshToken: typeof import("../../src/vault/credentials").storeRefreshToken;
  timings: Timings;
}

async function eachConcurrently<T>(items: T[], concurrency: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      await work(items[index], index);
    }
  }));
}

async function createSites(bench: Bench, rail: Rail, count: number, label: string): Promise<Site[]> {
  const sites: Site[] = [];
  for (let i = 0; i < count; i++) {
    const { rows: [site] } = await bench.root.query(
      "select id from app_private.create_site($1, $2, 'shop.example', consent_mode => 'implied', timezone => $3, currency => $4)",
      [bench.ownerUserId, `bench oci ${rail} ${label} ${i + 1}`, TIMEZONE, CURRENCY]);
    const { rows: [destination] } = await bench.root.query(
      "select id, customer_id, login_customer_id, conversion_action from app_public.create_destination($1, $2, $3, $4, $5)",
      [site.id, rail, CUSTOMER_ID, CONVERSION_ACTION, LOGIN_CUSTOMER_ID]);
    const refreshToken = `1//bench-${randomBytes(24).toString("base64url")}`;
    await bench.fakes.grant(refreshToken);
    await bench.storeRefreshToken((text, values) => bench.root.query(text, values), bench.vault, destination.id, refreshToken);
    sites.push({
      id: site.id,
      destination: {
        rail, customerId: destination.customer_id, loginCustomerId: destination.login_customer_id ?? undefined,
        conversionAction: destination.conversion_action, refreshToken,
      },
    });
  }
  return sites;
}

/**
 * Confirms `count` sales spread evenly over the sites through confirm_sale_and_enqueue (so each
 * sale, its identifiers, its queue row and its upload job are what production makes): a gclid
 * each, an email on 2 in 5 and a phone on 1 in 5, ad_user_data granted on 8 in 10 (only those
 * carry hashed identifiers), ad_personalization on 7 in 10. SEED_CHUNK sales per statement (each
 * its own transaction: every sale replaces its site's upload job, and a long transaction makes
 * that ever slower), on SEED_CONNECTIONS connections that own disjoint sites (so they never wait
 * for each other's job row).
 */
async function seed(bench: Bench, sites: Site[], count: number, prefix: string): Promise<number> {
  const began = performance.now();
  const connections = Math.min(SEED_CONNECTIONS, sites.length);
  let done = 0;
  let logged = 0;
  await Promise.all(Array.from({ length: connections }, async (_, worker) => {
    const own = sites.filter((_, index) => index % connections === worker);
    // Site i gets ⌊count/sites⌋ sales, the first count mod sites one more.
    const share = sites.reduce((sum, _, index) =>
      sum + (index % connections === worker ? Math.floor(count / sites.length) + (index < count % sites.length ? 1 : 0) : 0), 0);
    for (let from = 1; from <= share; from += SEED_CHUNK) {
      const to = Math.min(share, from + SEED_CHUNK - 1);
      await bench.seedPool.query(
        `select count((app_public.confirm_sale_and_enqueue(
                  site_id => ($1::uuid[])[1 + (g - 1) % $2::int],
                  external_id => $3 || g,
                  amount => round((10 + random() * 4990)::numeric, 2),
                  currency => $6,
                  occurred_at => date_trunc('second', now() - interval '1 hour' - random() * interval '47 hours'),
                  gclid => 'Cj0KCQjw' || md5($3 || g) || md5(g || $3),
                  email => case when g % 5 < 2 then 'customer.' || $3 || g || '@example.com' end,
                  phone => case when g % 5 = 0 then '+90 555 ' || lpad((g % 10000000)::text, 7, '0') end,
                  consent => jsonb_build_object('ad_user_data', case when g % 10 < 8 then 'granted' else 'denied' end,
                                                'ad_personalization', case when g % 10 < 7 then 'granted' else 'denied' end))).id)
           from generate_series($4::int, $5::int) g`,
        [own.map((s) => s.id), own.length, `${prefix}${worker + 1}-`, from, to, CURRENCY]);
      done += to - from + 1;
      if (done - logged >= SEED_LOG_EVERY || done === count) {
        logged = done - (done % SEED_LOG_EVERY);
        const seconds = (performance.now() - began) / 1000;
        log(`  seeded ${fmt(done)}/${fmt(count)} conversions (${fmt(done / seconds)}/s)`);
      }
    }
  }));
  return (performance.now() - began) / 1000;
}

/** The payloads ours is about to send, read now (not timed) as the baseline's Conversion[] batches, per site. */
async function prebuildBatches(bench: Bench, sites: Site[]): Promise<Conversion[][][]> {
  const perSite: Conversion[][][] = [];
  for (const site of sites) {
    const { rows } = await bench.root.query(
      `select p.* from app_private.conversion_payloads($1, array(
          select q.id from app_public.offline_conversion_queue q
           where q.site_id = $1 and q.status = 'pending' and q.kind = 'conversion'
           order by q.retry_at, q.created_at, q.id)) p`, [site.id]);
    const conversions: Conversion[] = rows.map((row) => ({
      rowId: row.id,
      orderId: row.order_id,
      clickId: row.click_id && row.click_id_type ? { type: row.click_id_type, value: row.click_id } : undefined,
      conversionTime: row.conversion_time,
      value: row.value,
      currency: row.currency,
      emailSha256: row.email_sha256 ?? undefined,
      phoneSha256: row.phone_sha256 ?? undefined,
      consent: { adUserData: row.ad_user_data, adPersonalization: row.ad_personalization },
    }));
    const batches: Conversion[][] = [];
    for (let i = 0; i < conversions.length; i += BATCH) batches.push(conversions.slice(i, i + BATCH));
    perSite.push(batches);
  }
  return perSite;
}

function side(seconds: number, conversions: number, timings: Timings, concurrency: number): Side {
  const batches = timings.calls.upload_rpc ?? 0;
  const breakdown: Record<string, number> = {};
  const sqlTotal = Object.entries(timings.ms).filter(([bucket]) => bucket !== "upload_rpc" && bucket !== "oauth_fetch")
    .reduce((sum, [, ms]) => sum + ms, 0);
  for (const [bucket, ms] of Object.entries(timings.ms)) breakdown[bucket] = round(ms);
  breakdown.sql_total = round(sqlTotal);
  // The rest of the wall time: our JavaScript around the calls (mapping rows, JSON of outcomes), event-loop waits.
  // Only meaningful when one thing is in flight at a time.
  if (concurrency === 1) breakdown.rest = round(seconds * 1000 - sqlTotal - (timings.ms.upload_rpc ?? 0));
  const perBatch: Record<string, number> = {};
  if (batches > 0) for (const [bucket, ms] of Object.entries(breakdown)) perBatch[bucket] = round(ms / batches, 2);
  return { seconds: round(seconds, 3), conversions_per_s: Math.round(conversions / seconds), batches, breakdown_ms: breakdown, per_batch_ms: perBatch };
}

async function runRound(bench: Bench, rail: Rail, label: string, conversions: number, siteCount: number): Promise<Round> {
  const { root, timings } = bench;
  log(`${rail} ${label}: ${fmt(conversions)} conversions over ${siteCount} site(s)`);
  const sites = await createSites(bench, rail, siteCount, label);
  const siteIds = sites.map((s) => s.id);
  const seedSeconds = await seed(bench, sites, conversions, `oci-${rail === "google_ads" ? "ga" : "dm"}-${label}-`);
  let mark = performance.now();
  // What autovacuum would have done to a backlog this size by now; and a checkpoint, so the
  // measured delivery does not pay for the seeding's writes (full-page images after it).
  await root.query("vacuum (analyze) app_public.offline_conversion_queue, app_public.sales, app_private.sale_identifiers");
  await root.query("checkpoint");
  const vacuumSeconds = (performance.now() - mark) / 1000;
  mark = performance.now();
  const batches = await prebuildBatches(bench, sites);
  const prebuildSeconds = (performance.now() - mark) / 1000;
  const prebuilt = batches.flat().reduce((sum, batch) => sum + batch.length, 0);
  if (prebuilt !== conversions) throw new Error(`expected ${conversions} pending conversions, found ${prebuilt}`);
  await bench.fakes.collect(rail); // forget anything earlier

  // Ours: deliverSiteConversions per site, as the upload task runs it.
  log(`  ours: delivering through deliverSiteConversions (concurrency ${bench.concurrency})…`);
  const total: Round["ours"]["summary"] = { claimed: 0, accepted: 0, sent: 0, retry: 0, failed: 0 };
  const skipped: string[] = [];
  timings.reset();
  let began = performance.now();
  await eachConcurrently(sites, bench.concurrency, async (site, index) => {
    const siteBegan = performance.now();
    const summary = await bench.deliver(
      { owner: bench.owner, vault: bench.vault, rails: bench.rails }, site.id);
    for (const key of ["claimed", "accepted", "sent", "retry", "failed"] as const) total[key] += summary[key];
    if (summary.skipped) skipped.push(summary.skipped);
    log(`    site ${index + 1}/${sites.length}: ${fmt(summary.claimed)} claimed, ${fmt(summary.accepted)} accepted, ${fmt(summary.sent)} sent, ` +
      `${fmt(summary.retry)} retry, ${fmt(summary.failed)} failed in ${((performance.now() - siteBegan) / 1000).toFixed(2)} s` +
      (summary.skipped ? ` (skipped: ${summary.skipped})` : ""));
  });
  const oursSide = side((performance.now() - began) / 1000, conversions, timings, bench.concurrency);
  // Batches locked, counting each delivery's last, empty look.
  const locks = timings.calls.payloads ?? 0;
  const oursFake = await bench.fakes.collect(rail);
  log(`  ours: ${oursSide.seconds} s, ${fmt(oursSide.conversions_per_s)} conversions/s, ${oursSide.batches} batches`);

  // Baseline: the same conversions, pre-built, straight to the same client and fake.
  log(`  baseline: ${batches.flat().length} pre-built batches straight to uploadConversions…`);
  const outcomes: Record<string, number> = {};
  timings.reset();
  began = performance.now();
  await eachConcurrently(sites, bench.concurrency, async (site, index) => {
    const client = bench.rails.railFor(rail);
    for (const batch of batches[index]) {
      const outcome = await client.uploadConversions(site.destination, batch);
      if (outcome.kind !== "rows") outcomes[outcome.kind] = (outcomes[outcome.kind] ?? 0) + batch.length;
      else for (const row of outcome.rows) outcomes[row.kind] = (outcomes[row.kind] ?? 0) + 1;
    }
  });
  const baselineSide = side((performance.now() - began) / 1000, conversions, timings, bench.concurrency);
  const baselineFake = await bench.fakes.collect(rail);
  log(`  baseline: ${baselineSide.seconds} s, ${fmt(baselineSide.conversions_per_s)} conversions/s`);

  // Exactness: the queue says delivered, once; the fake got each order id once, the queue's set.
  const { rows: statuses } = await root.query(
    `select status, count(*)::int as n, min(attempts)::int as min_attempts, max(attempts)::int as max_attempts
       from app_public.offline_conversion_queue where site_id = any($1::uuid[]) group by status order by status`, [siteIds]);
  const { rows: [digest] } = await root.query(
    `select encode(sha256(convert_to(string_agg(order_id, E'\\n' order by order_id collate "C"), 'UTF8')), 'hex') as sha256
       from app_public.offline_conversion_queue where site_id = any($1::uuid[])`, [siteIds]);
  const { rows: [destinations] } = await root.query(
    "select bool_and(status = 'active') as active from app_public.destinations where site_id = any($1::uuid[])", [siteIds]);
  const byStatus = Object.fromEntries(statuses.map((s) => [s.status, s.n as number]));
  const attempts = { min: Math.min(...statuses.map((s) => s.min_attempts)), max: Math.max(...statuses.map((s) => s.max_attempts)) };
  const fakeGotAll = (fake: FakeReceipt) => fake.rows === conversions && fake.distinct_order_ids === conversions &&
    fake.refused_requests === 0 && fake.order_ids_sha256 === digest.sha256;
  const oursExactlyOnce = byStatus[DELIVERED[rail]] === conversions && Object.keys(byStatus).length === 1 &&
    attempts.min === 1 && attempts.max === 1 && total.claimed === conversions && skipped.length === 0 && fakeGotAll(oursFake);
  const baselineExactlyOnce = outcomes.accepted === conversions && Object.keys(outcomes).length === 1 && fakeGotAll(baselineFake);
  log(`  checks: queue ${JSON.stringify(byStatus)}, attempts ${attempts.min}..${attempts.max}; fake got ${fmt(oursFake.rows)} rows ` +
    `(${fmt(oursFake.distinct_order_ids)} distinct) from ours, ${fmt(baselineFake.rows)} (${fmt(baselineFake.distinct_order_ids)}) from the baseline: ` +
    `${oursExactlyOnce && baselineExactlyOnce ? "each exactly once" : "NOT EXACT"}`);

  return {
    label, rail, conversions, sites: siteCount,
    seed: { seconds: round(seedSeconds, 2), rows_per_s: Math.round(conversions / seedSeconds), vacuum_analyze_checkpoint_s: round(vacuumSeconds, 2), prebuild_s: round(prebuildSeconds, 2) },
    ours: { ...oursSide, locks, summary: total, skipped },
    baseline: { ...baselineSide, outcomes },
    checks: {
      queue_by_status: byStatus, attempts, queue_order_ids_sha256: digest.sha256, ours_fake: oursFake, baseline_fake: baselineFake,
      destinations_active: destinations.active === true, ours_exactly_once: oursExactlyOnce, baseline_exactly_once: baselineExactlyOnce,
    },
  };
}

/* ------------------------------------------------------------------ main */

export async function main(args: string[]): Promise<number> {
  let options: Options | "help";
  try {
    options = parseOptions(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`bench oci: ${error.message} (npm run bench -- oci --help)\n`);
    return 2;
  }
  if (options === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
  const { conversions, sites, rails: railNames, runs, warmup, concurrency, keep } = options;

  const { default: pgModule } = await import("pg");
  const { testEnv } = await import("../helpers/env.js");
  const { readConfig } = await import("../../src/config.js");
  const { migrateDatabase } = await import("../../src/db/migrate.js");
  const { setup } = await import("../../src/setup/setup.js");
  const { deliverSiteConversions } = await import("../../src/delivery/deliver.js");
  const { makeRails } = await import("../../src/delivery/rails.js");
  const { storeRefreshToken } = await import("../../src/vault/credentials.js");
  const { Vault } = await import("../../src/vault/vault.js");

  Object.assign(process.env, testEnv(BENCH_DATABASE), { LOG_LEVEL: "silent" });
  const config = readConfig();
  const loadStart = os.loadavg();

  log(`database ${BENCH_DATABASE}: setup and migrate`);
  await setup(config, { recreate: true });
  await migrateDatabase(config);
  const rootUrl = new URL(config.rootDatabaseUrl);
  rootUrl.pathname = `/${config.databaseName}`;
  const root = new pgModule.Client({ connectionString: rootUrl.toString() });
  await root.connect();
  const owner = new pgModule.Pool({ connectionString: config.databaseUrl, max: CONNECTIONS_PER_DELIVERY * concurrency + 2 });
  const seedPool = new pgModule.Pool({ connectionString: rootUrl.toString(), max: SEED_CONNECTIONS });
  let fakes: Fakes | undefined;
  let rails: Rails | undefined;
  try {
    await root.query("set client_min_messages to warning");
    fakes = options.fakes === "child" ? await startFakesChild() : await startFakesHere();
    log(`fakes up (${options.fakes === "child" ? `child pid ${fakes.pid}` : "in this process"}): Google Ads ${fakes.endpoints.googleAds}, ` +
      `Data Manager ${fakes.endpoints.dataManager}, OAuth ${fakes.endpoints.oauth}`);
    const settings: GoogleSettings = {
      developerToken: DEVELOPER_TOKEN, clientId: "bench-client-id", clientSecret: "bench-client-secret",
      dataManagerEndpoint: fakes.endpoints.dataManager, googleAdsEndpoint: fakes.endpoints.googleAds, insecure: true,
      oauthTokenUrl: fakes.endpoints.oauth,
    };
    rails = makeRails(settings);
    const timings = new Timings();
    timePool(owner, timings);
    for (const rail of railNames) timeRail(rails.railFor(rail), timings);
    timeTokenFetches(fakes.endpoints.oauth, timings);
    const { rows: [user] } = await root.query("insert into app_public.users (email) values ('bench-oci@opsmantik.test') returning id");
    const { rows: [pgInfo] } = await root.query(
      "select current_setting('server_version') as version, current_setting('shared_buffers') as shared_buffers, current_setting('work_mem') as work_mem");
    const bench: Bench = {
      root, seedPool, owner, rails, vault: new Vault(config.vaultKeys), fakes, ownerUserId: user.id, concurrency,
      deliver: deliverSiteConversions, storeRefreshToken, timings,
    };

    const perRail: Record<string, unknown> = {};
    const pass: Record<string, boolean> = {};
    for (const rail of railNames) {
      const warm = warmup > 0 ? await runRound(bench, rail, "warmup", warmup, Math.min(WARMUP_SITES, sites, warmup)) : undefined;
      const measured: Round[] = [];
      for (let run = 1; run <= runs; run++) measured.push(await runRound(bench, rail, `run${run}`, conversions, sites));
      const bestOurs = measured.reduce((a, b) => (b.ours.conversions_per_s > a.ours.conversions_per_s ? b : a));
      const bestBaseline = measured.reduce((a, b) => (b.baseline.conversions_per_s > a.baseline.conversions_per_s ? b : a));
      const ratio = round(bestOurs.ours.conversions_per_s / bestBaseline.baseline.conversions_per_s, 3);
      const exact = measured.every((r) => r.checks.ours_exactly_once && r.checks.baseline_exactly_once && r.checks.destinations_active);
      const warmExact = warm === undefined || (warm.checks.ours_exactly_once && warm.checks.baseline_exactly_once);
      pass[`${rail}_ratio`] = ratio >= TARGETS.ratio_min;
      pass[`${rail}_exactly_once`] = exact && warmExact;
      log(`${rail}: ours ${fmt(bestOurs.ours.conversions_per_s)} conversions/s vs the fake called directly ` +
        `${fmt(bestBaseline.baseline.conversions_per_s)} conversions/s: ratio ${ratio}`);
      perRail[rail] = {
        ratio,
        ours: { ...bestOurs.ours, runs: measured.map((r) => ({ seconds: r.ours.seconds, conversions_per_s: r.ours.conversions_per_s })) },
        baseline: { ...bestBaseline.baseline, runs: measured.map((r) => ({ seconds: r.baseline.seconds, conversions_per_s: r.baseline.conversions_per_s })) },
        seed: measured.map((r) => r.seed),
        checks: { ...bestOurs.checks, exactly_once_every_run: exact, warmup_exactly_once: warmExact },
        warmup: warm && { conversions: warm.conversions, ours_conversions_per_s: warm.ours.conversions_per_s, baseline_conversions_per_s: warm.baseline.conversions_per_s },
      };
    }

    const ok = Object.values(pass).every(Boolean);
    const report = {
      benchmark: "oci",
      ok,
      pass,
      targets: TARGETS,
      conversions,
      sites,
      concurrency,
      rails: perRail,
      settings: {
        runs, warmup_conversions: warmup, batch_size: BATCH, fakes: options.fakes, seed_chunk: SEED_CHUNK, seed_connections: SEED_CONNECTIONS,
        figures: "conversions/s of the best measured run of each side; ratio = ours ÷ baseline per rail",
        ours: "deliverSiteConversions per site (owner pool, vault, makeRails) over plaintext loopback gRPC to the fakes; sales confirmed with confirm_sale_and_enqueue, then vacuum (analyze) and checkpoint",
        baseline: "the same payloads read beforehand as Conversion[] batches of 2,000, sent with the same rail client's uploadConversions to the same fake; no database",
        breakdown: "owner-pool queries timed by statement and uploadConversions calls timed on the client (encode, round trip, fake, decode); oauth_fetch (token requests, part of upload_rpc); rest = wall − SQL − upload_rpc (only with --concurrency 1; otherwise the sums overlap)",
        fakes_record: "both fakes keep every request in memory (not switchable); collected and cleared after each side",
      },
      machine: machineInfo(pgInfo, loadStart),
      total_s: round((Date.now() - started) / 1000),
    };
    return finishReport(log, report, pass);
  } finally {
    await rails?.close().catch(() => undefined);
    await fakes?.close().catch(() => undefined);
    await owner.end();
    await seedPool.end();
    await root.end();
    await dropBenchDatabase(config.rootDatabaseUrl, BENCH_DATABASE, keep, log);
  }
}

if (process.env[CHILD_ROLE] === "fakes") {
  serveFakesChild().catch((error: Error) => {
    process.stderr.write(`bench oci fakes failed: ${error.stack ?? error.message}\n`);
    process.exit(1);
  });
}
