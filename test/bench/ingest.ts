/*
 * `npm run bench -- ingest`: POST /api/sync under load, measured beside a baseline in the same
 * run, on the same machine and database:
 *   1. single-event requests at 32 connections: requests/s and latency, baseline vs ours, in
 *      interleaved rounds (the ratio and p99 judged are the rounds' medians: on a shared
 *      2-core machine one pair of runs can land on a noisy second);
 *   2. 10-event batches: events/s, baseline vs ours;
 *   3. ours: one hot site alone vs the same load spread over 1,000 sites;
 *   4. ours again, single events, with millions of other sites' rows in the ledger, vs phase 1
 *      (and the baseline again, which tells a slower machine from a slower ledger), in the same
 *      number of rounds, medians compared;
 *   5. exactness: ledger rows = events stored = events the responses accepted, no non-2xx.
 * The baseline is what "just store it" costs: node:http, JSON.parse, one plain INSERT per event
 * into an unpartitioned table. Ours does the origin check, validation, consent, duplicate
 * detection, ledger, event and sessions in one transaction; the targets say how much of the
 * baseline's throughput that may cost.
 *
 * The servers run in a child process (ingest-servers.ts) and the load comes from this one, so
 * neither steals the other's event loop. Every run drains: no new request starts after the
 * deadline, and every request started is answered and counted, so the counts are exact.
 * Progress goes to stderr; one JSON line of figures goes to stdout. Exit 1 when a target fails.
 */
import { ChildProcess, fork } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { dropBenchDatabase, finishReport, machineInfo, numberOption, parseBenchArgs, progressLog, round, UsageError } from "./common";
import pg from "pg";
import { Pool as HttpPool } from "undici";
import { testEnv } from "../helpers/env";
import { Config, readConfig } from "../../src/config";
import { migrateDatabase } from "../../src/db/migrate";
import { setup } from "../../src/setup/setup";

const BENCH_DATABASE = "opsmantik_bench";
const ORIGIN = "https://shop.example";
const USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";
const BATCH_SIZE = 10;
const SPREAD_SITES = 1000;
const POOL_SIZE = 10; // ours (makePools' default) and the baseline's

const TARGETS = {
  single_requests_ratio_min: 0.5,
  single_p99_ms_max: 50,
  batch_events_ratio_min: 0.5,
  hot_vs_spread_ratio_min: 0.9, // "does as well as": within run-to-run noise of 10%
  ledger_vs_empty_ratio_min: 0.9, // "within 10%": slower by at most 10%
};

const USAGE = `usage: npm run bench -- ingest [--duration S] [--warmup S] [--rounds N] [--connections N] [--ledger-rows N] [--keep]
  --duration S      seconds measured per run (default 10)
  --rounds N        interleaved baseline/ours pairs of single-event runs, before and after the
                    ledger fill (default 3; medians judged)
  --warmup S        unmeasured seconds before each run (default 2; its events still count for exactness)
  --connections N   concurrent keep-alive connections (default 32)
  --ledger-rows N   other sites' ledger rows generated before phase 4 (default 10000000)
  --keep            keep the ${BENCH_DATABASE} database afterwards
Prints progress on stderr and one JSON line on stdout; exits 1 when a target is missed.
`;


interface Options {
  durationS: number;
  warmupS: number;
  rounds: number;
  connections: number;
  ledgerRows: number;
  keep: boolean;
}

function parseOptions(args: string[]): Options | "help" {
  const values = parseBenchArgs(args, {
    duration: { type: "string" }, warmup: { type: "string" }, rounds: { type: "string" }, connections: { type: "string" },
    "ledger-rows": { type: "string" }, keep: { type: "boolean" },
  });
  if (values === "help") return "help";
  return {
    durationS: numberOption("duration", values.duration, 10, 1, false),
    warmupS: numberOption("warmup", values.warmup, 2, 0, false),
    rounds: numberOption("rounds", values.rounds, 3, 1),
    connections: numberOption("connections", values.connections, 32, 1),
    ledgerRows: numberOption("ledger-rows", values["ledger-rows"], 10_000_000, 0),
    keep: values.keep === true,
  };
}

const { log, started } = progressLog("ingest");

/* ------------------------------------------------------------------ traffic */

interface Site {
  id: string;
  publicKey: string;
}

interface Visitor {
  id: string;
  site: Site;
  consent: Record<string, string> | undefined;
  lastTs: number;
  busy: boolean;
}

const PATHS = ["/", "/products/running-shoes-4471", "/products/linen-shirt-208", "/category/women/dresses", "/category/men",
  "/cart", "/checkout", "/blog/how-to-choose-a-mattress", "/search?q=red+dress", "/contact", "/about", "/sale"];
const CUSTOM_EVENTS = ["scroll", "click", "add_to_cart", "video_play", "form_start", "phone_click"];
const GRANTED = { analytics_storage: "granted", ad_storage: "granted", ad_user_data: "granted", ad_personalization: "granted" };
const DENIED_ANALYTICS = { analytics_storage: "denied", ad_storage: "granted", ad_user_data: "granted", ad_personalization: "denied" };
const DEVICES = [
  { screen: "1920x1080", language: "tr-TR", timezone: "Europe/Istanbul" },
  { screen: "390x844", language: "tr-TR", timezone: "Europe/Istanbul" },
  { screen: "1440x900", language: "en-GB", timezone: "Europe/London" },
];

const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)];
const token = (bytes: number) => randomBytes(bytes).toString("base64url");

/**
 * Visitors and their events: most requests come from new visitors, about a third from a recent
 * one (whose session then extends); landing pages carry gclid, utm or fbclid now and then.
 * Like a real tracker, a visitor has one request in flight at most and its events arrive in
 * order (each batch after the previous one), so sessions extend instead of being re-derived.
 */
class Traffic {
  private readonly recent: Visitor[] = [];
  private next = 0;
  private readonly tag = token(4).replace(/[^A-Za-z0-9]/g, "x");

  constructor(private readonly sites: Site[]) {}

  visitor(): Visitor {
    if (this.recent.length > 0 && Math.random() < 0.3) {
      const again = pick(this.recent);
      if (!again.busy) return again;
    }
    const roll = Math.random();
    const visitor: Visitor = {
      id: `v_${this.tag}_${(this.next++).toString(36)}`,
      site: pick(this.sites),
      consent: roll < 0.6 ? GRANTED : roll < 0.85 ? DENIED_ANALYTICS : undefined,
      lastTs: 0,
      busy: false,
    };
    if (this.recent.length < 5000) this.recent.push(visitor);
    else this.recent[Math.floor(Math.random() * 5000)] = visitor;
    return visitor;
  }

  private landingUrl(): { url: string; referrer: string } {
    const page = `https://shop.example${pick(PATHS)}`;
    const join = page.includes("?") ? "&" : "?";
    const roll = Math.random();
    if (roll < 0.1) return { url: `${page}${join}gclid=EAIaIQobChMI${token(30)}`, referrer: "https://www.google.com/" };
    if (roll < 0.2) return { url: `${page}${join}utm_source=newsletter&utm_medium=email&utm_campaign=spring_${Math.floor(Math.random() * 5)}`, referrer: "" };
    if (roll < 0.25) return { url: `${page}${join}fbclid=IwAR${token(24)}`, referrer: "https://m.facebook.com/" };
    return { url: page, referrer: pick(["", "", "https://www.google.com/", "https://shop.example/", "https://duckduckgo.com/"]) };
  }

  /** One request from one visitor: `count` events ending now, the first a pageview; call done() once answered. */
  body(count: number): Outgoing {
    const visitor = this.visitor();
    visitor.busy = true;
    const { url, referrer } = this.landingUrl();
    const now = Date.now();
    const first = Math.max(now - (count - 1) * 200, visitor.lastTs + 1);
    const step = count > 1 ? Math.max(1, Math.min(200, Math.floor((now - first) / (count - 1)))) : 0;
    const events = [];
    for (let i = 0; i < count; i++) {
      const type = i === 0 ? (count > 1 || Math.random() < 0.8 ? "pageview" : pick(CUSTOM_EVENTS)) : pick(["pageview", ...CUSTOM_EVENTS]);
      events.push({
        id: randomUUID(),
        type,
        ts: new Date(first + i * step).toISOString(),
        visitor_id: visitor.id,
        url: i === 0 ? url : `https://shop.example${pick(PATHS)}`,
        referrer: i === 0 ? referrer : "https://shop.example/",
        title: "Shop Example — spring sale",
        consent: visitor.consent,
        device: pick(DEVICES),
        props: type === "pageview" ? undefined : { element: "buy-button", value: Math.floor(Math.random() * 500) },
      });
    }
    visitor.lastTs = first + (count - 1) * step;
    return { body: JSON.stringify({ site: visitor.site.publicKey, events }), events: count, done: () => { visitor.busy = false; } };
  }
}

interface Outgoing {
  body: string;
  events: number;
  done(): void;
}

/* ------------------------------------------------------------------ load */

interface Tally {
  requests: number;
  eventsSent: number;
  accepted: number;
  duplicates: number;
  rejected: number;
  non2xx: number;
  errors: number;
  statuses: Record<string, number>;
  samples: string[];
}

const emptyTally = (): Tally => ({ requests: 0, eventsSent: 0, accepted: 0, duplicates: 0, rejected: 0, non2xx: 0, errors: 0, statuses: {}, samples: [] });

function addTally(into: Tally, from: Tally): void {
  for (const key of ["requests", "eventsSent", "accepted", "duplicates", "rejected", "non2xx", "errors"] as const) into[key] += from[key];
  for (const [status, count] of Object.entries(from.statuses)) into.statuses[status] = (into.statuses[status] ?? 0) + count;
  into.samples.push(...from.samples.slice(0, 5 - into.samples.length));
}

interface RunFigures {
  seconds: number;
  requests: number;
  accepted_events: number;
  requests_per_s: number;
  events_per_s: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  non_2xx: number;
  errors: number;
}


/**
 * The middle item by `key`; of two middles (an even number of items), the lower. That is the
 * stricter one for a figure with a floor; for a ceiling (p99), negate the key.
 */
function middle<T>(items: T[], key: (item: T) => number): T {
  return [...items].sort((a, b) => key(a) - key(b))[Math.floor((items.length - 1) / 2)];
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/**
 * `connections` loops, each on its own keep-alive connection, send requests back to back until
 * the deadline; requests in flight then finish and are counted. Throughput is over the time to
 * the last response.
 */
async function drive(url: string, connections: number, seconds: number, makeBody: () => Outgoing):
  Promise<{ figures: RunFigures; tally: Tally }> {
  const http = new HttpPool(url, { connections, pipelining: 1, headersTimeout: 60_000, bodyTimeout: 60_000 });
  const tally = emptyTally();
  const latencies: number[] = [];
  const begin = process.hrtime.bigint();
  const deadline = Date.now() + seconds * 1000;
  const loop = async () => {
    while (Date.now() < deadline) {
      const { body, events, done } = makeBody();
      const sent = process.hrtime.bigint();
      tally.requests++;
      tally.eventsSent += events;
      try {
        const res = await http.request({
          path: "/api/sync", method: "POST", body,
          headers: { "content-type": "application/json", origin: ORIGIN, "user-agent": USER_AGENT },
        });
        const text = await res.body.text();
        latencies.push(Number(process.hrtime.bigint() - sent) / 1e6);
        tally.statuses[res.statusCode] = (tally.statuses[res.statusCode] ?? 0) + 1;
        if (res.statusCode < 200 || res.statusCode > 299) {
          tally.non2xx++;
          if (tally.samples.length < 5) tally.samples.push(`${res.statusCode} ${text.slice(0, 200)}`);
          continue;
        }
        const result = JSON.parse(text) as { accepted: number; duplicates: number; rejected: unknown[] };
        tally.accepted += result.accepted;
        tally.duplicates += result.duplicates;
        tally.rejected += result.rejected.length;
        if (result.rejected.length > 0 && tally.samples.length < 5) tally.samples.push(`rejected ${JSON.stringify(result.rejected[0])}`);
      } catch (error) {
        tally.errors++;
        if (tally.samples.length < 5) tally.samples.push(`error ${(error as Error).message}`);
      } finally {
        done();
      }
    }
  };
  await Promise.all(Array.from({ length: connections }, loop));
  const elapsed = Number(process.hrtime.bigint() - begin) / 1e9;
  await http.close();
  const sorted = Float64Array.from(latencies).sort();
  return {
    tally,
    figures: {
      seconds: round(elapsed, 2),
      requests: tally.requests,
      accepted_events: tally.accepted,
      requests_per_s: round(tally.requests / elapsed),
      events_per_s: round(tally.accepted / elapsed),
      p50_ms: round(percentile(sorted, 50), 2),
      p90_ms: round(percentile(sorted, 90), 2),
      p99_ms: round(percentile(sorted, 99), 2),
      max_ms: round(sorted[sorted.length - 1] ?? NaN, 2),
      non_2xx: tally.non2xx,
      errors: tally.errors,
    },
  };
}

/* ------------------------------------------------------------------ database */

function rootUrlFor(config: Config): string {
  const url = new URL(config.rootDatabaseUrl);
  url.pathname = `/${config.databaseName}`;
  return url.toString();
}

/** The owner user, 2 + SPREAD_SITES sites with rate limit off and no quota, and the baseline table. */
async function prepare(root: pg.Client, config: Config): Promise<{ main: Site; hot: Site; spread: Site[] }> {
  await root.query("set client_min_messages to warning");
  const { rows: [owner] } = await root.query("insert into app_public.users (email) values ('bench@opsmantik.test') returning id");
  const { rows } = await root.query<{ id: string; public_key: string }>(
    `select s.id, s.public_key
       from generate_series(1, $2::int) i,
            lateral app_private.create_site($1, 'bench ' || i, 'shop.example', 'required', null, 0, array['${ORIGIN}']) s
      order by i`, [owner.id, SPREAD_SITES + 2]);
  const sites = rows.map((row) => ({ id: row.id, publicKey: row.public_key }));
  await root.query(`
    create table public.bench_baseline (
      site text not null,
      id uuid primary key,
      occurred_at timestamptz not null,
      received_at timestamptz not null default now(),
      type text not null,
      visitor_id text not null,
      url text,
      referrer text,
      title text,
      props jsonb not null default '{}',
      consent jsonb,
      device jsonb
    );
    alter table public.bench_baseline owner to ${pg.escapeIdentifier(config.roles.owner)};
    analyze;`);
  return { main: sites[0], hot: sites[1], spread: sites.slice(2) };
}

/**
 * Other sites' ledger rows across the previous and the current month, in chunks of one
 * INSERT … SELECT each (for progress lines), then VACUUM ANALYZE (as autovacuum would have
 * done on a table this old) and a checkpoint, so phase 4 measures a settled table.
 */
async function fillLedger(root: pg.Client, rows: number): Promise<Record<string, number>> {
  const began = Date.now();
  const chunk = 1_000_000;
  const now = new Date();
  const from = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1));
  const to = new Date(now.getTime() - 3600_000);
  for (let done = 0; done < rows; ) {
    const count = Math.min(chunk, rows - done);
    const sites = Array.from({ length: 10 }, () => randomUUID());
    await root.query(
      `insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, received_at, billable, reason)
       select ($1::uuid[])[1 + g % 10], gen_random_uuid(), t.at, t.at, true, null
         from generate_series(1, $2::int) g,
              lateral (select $3::timestamptz + random() * ($4::timestamptz - $3::timestamptz) as at where g is not null offset 0) t`,
      [sites, count, from, to]);
    done += count;
    log(`ledger: ${done.toLocaleString("en")} / ${rows.toLocaleString("en")} rows (${((Date.now() - began) / 1000).toFixed(0)} s)`);
  }
  const inserted = Date.now();
  log("ledger: vacuum analyze…");
  await root.query("vacuum (analyze) app_public.ingest_idempotency");
  await root.query("checkpoint");
  const { rows: [where] } = await root.query(
    `select (select count(*) from app_public.ingest_idempotency_default)::bigint as default_rows,
            pg_total_relation_size('app_public.ingest_idempotency') as parent_bytes,
            (select sum(pg_total_relation_size(i.inhrelid)) from pg_inherits i
              where i.inhparent = 'app_public.ingest_idempotency'::regclass)::bigint as bytes`).catch(() => ({ rows: [{}] }));
  log(`ledger: ready (${((Date.now() - began) / 1000).toFixed(0)} s)`);
  return {
    insert_s: round((inserted - began) / 1000),
    vacuum_analyze_s: round((Date.now() - inserted) / 1000),
    default_partition_rows: Number(where.default_rows ?? NaN),
    size_mb: round(Number(where.bytes ?? NaN) / 2 ** 20),
  };
}

/* ------------------------------------------------------------------ servers */

interface Servers {
  ours: string;
  baseline: string;
  child: ChildProcess;
}

async function startServers(): Promise<Servers> {
  const child = fork(path.join(__dirname, "ingest-servers.ts"), [], { env: process.env, stdio: ["ignore", "inherit", "inherit", "ipc"] });
  return new Promise((resolve, reject) => {
    child.once("message", (urls: { ours: string; baseline: string }) => resolve({ ...urls, child }));
    child.once("exit", (code) => reject(new Error(`the bench servers exited with code ${code} before starting`)));
  });
}

async function stopServers(servers: Servers | undefined): Promise<void> {
  if (!servers || servers.child.exitCode !== null) return;
  const exited = new Promise<void>((resolve) => servers.child.once("exit", () => resolve()));
  servers.child.send("stop");
  const timer = setTimeout(() => servers.child.kill(), 15_000);
  await exited;
  clearTimeout(timer);
}

/* ------------------------------------------------------------------ main */

export async function main(args: string[]): Promise<number> {
  let options: Options | "help";
  try {
    options = parseOptions(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`bench ingest: ${error.message} (npm run bench -- ingest --help)\n`);
    return 2;
  }
  if (options === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
  const { durationS, warmupS, rounds, connections, ledgerRows, keep } = options;

  Object.assign(process.env, testEnv(BENCH_DATABASE), { LOG_LEVEL: "silent" });
  const config = readConfig();
  const loadStart = os.loadavg();

  log(`database ${BENCH_DATABASE}: setup and migrate`);
  await setup(config, { recreate: true });
  await migrateDatabase(config);
  const root = new pg.Client({ connectionString: rootUrlFor(config) });
  await root.connect();
  let servers: Servers | undefined;
  const ours = emptyTally();
  try {
    const { main: mainSite, hot, spread } = await prepare(root, config);
    const { rows: [pgInfo] } = await root.query("select current_setting('server_version') as version, current_setting('shared_buffers') as shared_buffers");
    servers = await startServers();
    log(`servers up: ours ${servers.ours}, baseline ${servers.baseline}; ${connections} connections, ${warmupS} s warm-up + ${durationS} s per run`);

    const run = async (label: string, target: "ours" | "baseline", sites: Site[], batch: number): Promise<RunFigures> => {
      const url = target === "ours" ? servers!.ours : servers!.baseline;
      const traffic = new Traffic(sites);
      const makeBody = () => traffic.body(batch);
      if (warmupS > 0) {
        const warm = await drive(url, connections, warmupS, makeBody);
        if (target === "ours") addTally(ours, warm.tally);
      }
      const { figures, tally } = await drive(url, connections, durationS, makeBody);
      if (target === "ours") addTally(ours, tally);
      log(`${label}: ${figures.requests_per_s} req/s, ${figures.events_per_s} events/s, p50 ${figures.p50_ms} ms, p99 ${figures.p99_ms} ms` +
        (figures.non_2xx || figures.errors ? `, ${figures.non_2xx} non-2xx, ${figures.errors} errors: ${tally.samples[0]}` : ""));
      return figures;
    };

    /** `rounds` pairs of single-event runs on the main site, each pair in `order`. */
    const inRounds = async (order: Array<"ours" | "baseline">, labels: Record<"ours" | "baseline", string>) => {
      const pairs: Array<Record<"ours" | "baseline", RunFigures>> = [];
      for (let i = 1; i <= rounds; i++) {
        const tag = rounds > 1 ? ` (round ${i} of ${rounds})` : "";
        const pair = {} as Record<"ours" | "baseline", RunFigures>;
        for (const target of order) pair[target] = await run(`${labels[target]}${tag}`, target, [mainSite], 1);
        pairs.push(pair);
      }
      return pairs;
    };

    const singleRounds = (await inRounds(["baseline", "ours"], { baseline: "single / baseline", ours: "single / ours" }))
      .map((pair) => ({ ...pair, ratio: round(pair.ours.requests_per_s / pair.baseline.requests_per_s, 3) }));
    // The round whose ratio is the median stands for phase 1.
    const medianRound = middle(singleRounds, (r) => r.ratio);
    const { baseline: singleBaseline, ours: singleOurs } = medianRound;
    const singleP99 = middle(singleRounds, (r) => -r.ours.p99_ms).ours.p99_ms;
    const batchBaseline = await run(`batch ${BATCH_SIZE} / baseline`, "baseline", [mainSite], BATCH_SIZE);
    const batchOurs = await run(`batch ${BATCH_SIZE} / ours`, "ours", [mainSite], BATCH_SIZE);
    const hotOurs = await run(`batch ${BATCH_SIZE} / ours, one hot site`, "ours", [hot], BATCH_SIZE);
    const spreadOurs = await run(`batch ${BATCH_SIZE} / ours, ${SPREAD_SITES} sites`, "ours", spread, BATCH_SIZE);

    log(`ledger: generating ${ledgerRows.toLocaleString("en")} rows of other sites`);
    const ledgerFill = await fillLedger(root, ledgerRows);
    // The same rounds again, ours then the baseline: the baseline is the canary that tells a
    // machine that slowed down from a ledger that did.
    const ledgerRounds = await inRounds(["ours", "baseline"],
      { ours: `single / ours, ${ledgerRows.toLocaleString("en")} ledger rows`, baseline: "single / baseline, after the ledger fill" });
    const byRate = (r: RunFigures) => r.requests_per_s;
    const ledgerOurs = middle(ledgerRounds.map((r) => r.ours), byRate);
    const ledgerBaseline = middle(ledgerRounds.map((r) => r.baseline), byRate);

    await stopServers(servers);
    servers = undefined;
    const benchSites = [mainSite, hot, ...spread].map((site) => site.id);
    const { rows: [counts] } = await root.query(
      `select (select count(*) from app_public.ingest_idempotency l where l.site_id = any($1::uuid[]))::bigint as ledger_rows,
              (select count(*) from app_public.events)::bigint as events,
              (select count(*) from app_public.sessions)::bigint as sessions`, [benchSites]);

    const ratio = (a: number, b: number) => round(a / b, 3);
    const singleRatio = medianRound.ratio;
    const batchRatio = ratio(batchOurs.events_per_s, batchBaseline.events_per_s);
    const hotRatio = ratio(hotOurs.events_per_s, spreadOurs.events_per_s);
    // Medians against medians: the phase-1 rounds' own figures, not the median-ratio round's.
    const ledgerRatio = ratio(ledgerOurs.requests_per_s, middle(singleRounds.map((r) => r.ours), byRate).requests_per_s);
    const canaryRatio = ratio(ledgerBaseline.requests_per_s, middle(singleRounds.map((r) => r.baseline), byRate).requests_per_s);
    const exactness = {
      accepted: ours.accepted,
      ledger_rows: Number(counts.ledger_rows),
      events: Number(counts.events),
      sessions: Number(counts.sessions),
      requests: ours.requests,
      events_sent: ours.eventsSent,
      duplicates: ours.duplicates,
      rejected: ours.rejected,
      non_2xx: ours.non2xx,
      errors: ours.errors,
      statuses: ours.statuses,
      samples: ours.samples,
    };
    const pass = {
      single_throughput: singleRatio >= TARGETS.single_requests_ratio_min,
      single_p99: singleP99 <= TARGETS.single_p99_ms_max,
      batch_throughput: batchRatio >= TARGETS.batch_events_ratio_min,
      hot_site: hotRatio >= TARGETS.hot_vs_spread_ratio_min,
      ledger_size: ledgerRatio >= TARGETS.ledger_vs_empty_ratio_min,
      exact: exactness.ledger_rows === exactness.events && exactness.events === exactness.accepted
        && exactness.accepted === exactness.events_sent && ours.non2xx === 0 && ours.errors === 0,
    };
    const ok = Object.values(pass).every(Boolean);
    const report = {
      benchmark: "ingest",
      ok,
      pass,
      targets: TARGETS,
      single: {
        baseline: singleBaseline, ours: singleOurs, ours_vs_baseline_requests: singleRatio, ours_p99_ms_median: singleP99,
        rounds: singleRounds.map((r) => ({ baseline_requests_per_s: r.baseline.requests_per_s, ours_requests_per_s: r.ours.requests_per_s, ratio: r.ratio, ours_p99_ms: r.ours.p99_ms })),
      },
      batch: { size: BATCH_SIZE, baseline: batchBaseline, ours: batchOurs, ours_vs_baseline_events: batchRatio },
      hot_vs_spread: { hot: hotOurs, spread: spreadOurs, sites: SPREAD_SITES, hot_vs_spread_events: hotRatio },
      ledger: {
        rows: ledgerRows, ...ledgerFill, ours: ledgerOurs, vs_empty_requests: ledgerRatio,
        baseline_canary: ledgerBaseline, baseline_canary_vs_phase1: canaryRatio, vs_empty_requests_canary_adjusted: round(ledgerRatio / canaryRatio, 3),
        rounds: ledgerRounds.map((r) => ({ ours_requests_per_s: r.ours.requests_per_s, baseline_requests_per_s: r.baseline.requests_per_s })),
      },
      exactness,
      settings: {
        duration_s: durationS, warmup_s: warmupS, single_rounds: rounds, connections, pool_size: POOL_SIZE,
        baseline: "node:http + JSON.parse, one INSERT per event into an unpartitioned table (primary key on id); a batch in one transaction",
      },
      machine: machineInfo(pgInfo, loadStart),
      total_s: round((Date.now() - started) / 1000),
    };
    return finishReport(log, report, pass);
  } finally {
    await stopServers(servers).catch(() => servers?.child.kill());
    await root.end();
    await dropBenchDatabase(config.rootDatabaseUrl, BENCH_DATABASE, keep, log);
  }
}
