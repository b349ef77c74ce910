/*
 * `npm run bench -- erasure`: erasing one visitor with 10k events from a database holding 10M
 * events over 1,000 sites, beside a hand-written `DELETE FROM events WHERE site_id = … AND
 * visitor_key = …` of an identical visitor in the same run, on the same machine and database.
 *
 *   ours      request_erasure (the request row, the held subject, the job) and then
 *             carry_out_erasure (linking, events, sessions, consents, calls, sales, conversions,
 *             receipt), each in its own transaction, timed together: what a tenant waits for.
 *   baseline  one DELETE of the twin visitor's events: the least any erasure must do.
 *
 * Each subject is a visitor with --visitor-events events in sessions of 20, with a consent and a
 * sale; every run uses a fresh pair (A for ours, B for the baseline), interleaved. The figure is
 * the median of --runs. Afterwards no event, session or consent of an erased visitor remains and
 * every other row is still there. Progress on stderr, one JSON line on stdout; exit 1 when a
 * target is missed.
 */
import os from "node:os";
import pg from "pg";
import { dropBenchDatabase, finishReport, machineInfo, numberOption, parseBenchArgs, progressLog, round, UsageError } from "./common";
import { testEnv } from "../helpers/env";
import { Config, readConfig } from "../../src/config";
import { migrateDatabase } from "../../src/db/migrate";
import { setup } from "../../src/setup/setup";

const BENCH_DATABASE = "opsmantik_bench_erasure";
const EVENTS_PER_SESSION = 20;
const CHUNK = 500_000;

const TARGETS = {
  ratio_max: 3, // ours ÷ baseline, seconds
  seconds_max: 5,
};

const USAGE = `usage: npm run bench -- erasure [--events N] [--sites N] [--visitor-events N] [--runs N] [--keep]
  --events N          background events over all sites (default 10000000)
  --sites N           sites (default 1000)
  --visitor-events N  events of each erased visitor (default 10000)
  --runs N            measured erasures of each side (default 3; the median counts)
  --keep              keep the ${BENCH_DATABASE} database afterwards
Prints progress on stderr and one JSON line on stdout; exits 1 when a target is missed.
`;

interface Options {
  events: number;
  sites: number;
  visitorEvents: number;
  runs: number;
  keep: boolean;
}

function parseOptions(args: string[]): Options | "help" {
  const values = parseBenchArgs(args, {
    events: { type: "string" }, sites: { type: "string" }, "visitor-events": { type: "string" }, runs: { type: "string" }, keep: { type: "boolean" },
  });
  if (values === "help") return "help";
  return {
    events: numberOption("events", values.events, 10_000_000, 0),
    sites: numberOption("sites", values.sites, 1000, 1),
    visitorEvents: numberOption("visitor-events", values["visitor-events"], 10_000, EVENTS_PER_SESSION),
    runs: numberOption("runs", values.runs, 3, 1),
    keep: values.keep === true,
  };
}

const { log } = progressLog("erasure");
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

function rootUrlFor(config: Config): string {
  const url = new URL(config.rootDatabaseUrl);
  url.pathname = `/${config.databaseName}`;
  return url.toString();
}

/** Background: events spread over every site and the last two months, with no sessions (they are not what is measured). */
async function seedBackground(db: pg.Client, siteIds: string[], events: number): Promise<void> {
  for (let done = 0; done < events; done += CHUNK) {
    const n = Math.min(CHUNK, events - done);
    await db.query(
      `insert into app_public.events (site_id, id, occurred_at, type, visitor_key, visitor_id, url, props, consent)
       select ($1::uuid[])[1 + (i % array_length($1::uuid[], 1))], gen_random_uuid(),
              now() - (random() * interval '55 days'), 'pageview', 'bg' || (i % 200000), 'bg' || (i % 200000),
              'https://shop.example/p/' || (i % 5000), '{"k":"v"}', '{"analytics_storage":"granted"}'
         from generate_series($2::bigint, $2::bigint + $3 - 1) i`, [siteIds, done, n]);
    log(`background events: ${done + n}/${events}`);
  }
}

/** One visitor with sessions of 20 events, a consent and a sale, as ingestion and a CRM would leave them. */
async function seedVisitor(db: pg.Client, siteId: string, visitor: string, events: number): Promise<void> {
  const sessions = Math.ceil(events / EVENTS_PER_SESSION);
  await db.query(
    `with s as (
       select gen_random_uuid() as id, g as n, now() - interval '50 days' + g * interval '2 hours' as started_at
         from generate_series(0, $4::int - 1) g
     ), ev as (
       insert into app_public.events (site_id, id, occurred_at, type, visitor_key, visitor_id, session_id, url, props, consent)
       select $1, gen_random_uuid(), s.started_at + e * interval '1 minute', 'pageview', $2, $2, s.id,
              'https://shop.example/p/' || e || '?utm_source=news', '{"email":"someone@example.com"}', '{"analytics_storage":"granted"}'
         from s cross join generate_series(0, $5::int - 1) e
        where s.n * $5 + e < $3
       returning 1
     )
     insert into app_public.sessions (site_id, id, started_at, ended_at, first_event_id, last_event_id, visitor_key, visitor_id,
                                      event_count, landing_url, attribution_tier, attribution_source)
     select $1, s.id, s.started_at, s.started_at + interval '19 minutes', gen_random_uuid(), gen_random_uuid(), $2, $2,
            $5, 'https://shop.example/p/0', 'S5', 'organic:direct'
       from s`, [siteId, visitor, events, sessions, EVENTS_PER_SESSION]);
  await db.query("select app_private.record_consent(s.public_key, $2, '{\"analytics_storage\":\"granted\"}', 'https://shop.example', '10.0.0.1') from app_public.sites s where s.id = $1",
    [siteId, visitor]);
  await db.query("select app_public.confirm_sale_and_enqueue($1, $2, 100, 'TRY', now() - interval '1 day', visitor_id => $3, email => $4)",
    [siteId, `sale-${visitor}`, visitor, `${visitor}@example.com`]);
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export async function main(args: string[]): Promise<number> {
  let options: Options | "help";
  try {
    options = parseOptions(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`bench erasure: ${error.message} (npm run bench -- erasure --help)\n`);
    return 2;
  }
  if (options === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
  Object.assign(process.env, testEnv(BENCH_DATABASE), { LOG_LEVEL: "silent" });
  const config = readConfig();
  const loadBefore = os.loadavg();
  log(`database ${BENCH_DATABASE}: setup and migrate`);
  await setup(config, { recreate: true });
  await migrateDatabase(config);
  const db = new pg.Client({ connectionString: rootUrlFor(config) });
  await db.connect();
  try {
    await db.query("set client_min_messages to warning");
    const { rows: [owner] } = await db.query("insert into app_public.users (email) values ('bench@opsmantik.test') returning id");
    const { rows: sites } = await db.query<{ id: string }>(
      `select s.id from generate_series(1, $2::int) i,
              lateral app_private.create_site($1, 'bench ' || i, 'shop.example', 'implied', null, 0, array['https://shop.example']) s
        order by i`, [owner.id, options.sites]);
    const siteIds = sites.map((s) => s.id);
    log(`${siteIds.length} sites`);
    await seedBackground(db, siteIds, options.events);
    const target = siteIds[0];
    const pairs: { ours: string; baseline: string }[] = [];
    for (let run = 0; run < options.runs; run++) {
      const pair = { ours: `erase_ours_${run}`, baseline: `erase_base_${run}` };
      await seedVisitor(db, target, pair.ours, options.visitorEvents);
      await seedVisitor(db, target, pair.baseline, options.visitorEvents);
      pairs.push(pair);
      log(`visitors of run ${run + 1}: 2 x ${options.visitorEvents} events`);
    }
    log("analyze");
    await db.query("analyze");
    const { rows: [{ n: totalBefore }] } = await db.query<{ n: string }>("select count(*) as n from app_public.events");
    const { rows: [pgInfo] } = await db.query("select current_setting('server_version') as version, current_setting('shared_buffers') as shared_buffers");

    const oursSeconds: number[] = [];
    const baselineSeconds: number[] = [];
    const receipts: unknown[] = [];
    for (const [run, pair] of pairs.entries()) {
      baselineSeconds.push(await timed(() =>
        db.query("delete from app_public.events where site_id = $1 and visitor_key = $2", [target, pair.baseline])));
      oursSeconds.push(await timed(async () => {
        const { rows: [request] } = await db.query("select id from app_public.request_erasure($1, 'visitor_id', $2)", [target, pair.ours]);
        const { rows: [done] } = await db.query("select app_private.carry_out_erasure($1, $2) as receipt", [target, request.id]);
        receipts.push(done.receipt);
      }));
      log(`run ${run + 1}: ours ${round(oursSeconds[run], 3)} s, baseline ${round(baselineSeconds[run], 3)} s`);
    }

    // Exactness: nothing of the erased visitors remains, nothing else went.
    const erased = pairs.flatMap((p) => [p.ours, p.baseline]);
    const { rows: [left] } = await db.query(
      `select (select count(*) from app_public.events where site_id = $1 and visitor_key = any($2))::int as events,
              (select count(*) from app_public.sessions where site_id = $1 and visitor_key = any($3))::int as sessions,
              (select count(*) from app_public.events)::bigint as total`,
      [target, erased, pairs.map((p) => p.ours)]);
    const expectedTotal = Number(totalBefore) - erased.length * options.visitorEvents;

    const ours = median(oursSeconds);
    const baseline = median(baselineSeconds);
    const ratio = ours / baseline;
    const report = {
      benchmark: "erasure",
      events_total: Number(totalBefore),
      sites: options.sites,
      visitor_events: options.visitorEvents,
      runs: options.runs,
      ours_seconds: round(ours, 3),
      baseline_delete_seconds: round(baseline, 3),
      ratio: round(ratio, 2),
      ours_runs: oursSeconds.map((s) => round(s, 3)),
      baseline_runs: baselineSeconds.map((s) => round(s, 3)),
      receipt: receipts[0],
      remaining_events_of_erased: left.events,
      remaining_sessions_of_erased: left.sessions,
      other_events_intact: Number(left.total) === expectedTotal,
      targets: TARGETS,
      machine: machineInfo(pgInfo, loadBefore),
    };
    return finishReport(log, report, {
      ratio: ratio <= TARGETS.ratio_max,
      seconds: ours < TARGETS.seconds_max,
      exact: left.events === 0 && left.sessions === 0 && Number(left.total) === expectedTotal,
    });
  } finally {
    await db.end();
    await dropBenchDatabase(config.rootDatabaseUrl, BENCH_DATABASE, options.keep, log);
  }
}
