/*
 * `npm run bench -- export`: GET /api/billing/dispute-export.csv of a frozen 1M-row month,
 * measured beside `psql \copy` of the same rows in the same run, on the same machine and
 * database:
 *   ours      the real service (startService, HTTP only) in a child process of this one, so its
 *             RSS is its own: polled from /proc every 50 ms during each export (and its kernel
 *             high-water mark, reset before each request, as a cross-check), with the RSS just
 *             before the request;
 *   baseline  psql -c "\copy (select … the same columns, rows and order …) to stdout with csv header",
 *             which writes byte for byte the same CSV: the database's own fastest way out.
 * Both outputs are read by the same consumer here (count bytes and lines, SHA-256 of the whole
 * body, and of the first three columns of each data row, as the README's
 * `tail -n +2 | cut -d, -f1-3 | sha256sum` does), never kept in memory. The latter must equal
 * the frozen invoice's ledger_digest (and the X-Invoice-Ledger-Digest header): a fast export
 * of the wrong rows fails.
 * Each side: one unmeasured warm-up, then --runs measured runs, interleaved; the best run of
 * each side gives the ratio, and the peak RSS is the highest of every request (warm-up included).
 * Progress goes to stderr; one JSON line of figures goes to stdout. Exit 1 when a target fails.
 */
import "../../src/polyfills";
import { ChildProcess, fork, spawn } from "node:child_process";
import { createHash, Hash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import { dropBenchDatabase, finishReport, machineInfo, numberOption, parseBenchArgs, progressLog, round, UsageError } from "./common";

const BENCH_DATABASE = "opsmantik_bench_export";
const CHILD_ROLE = "OPSMANTIK_BENCH_EXPORT_CHILD";
const HEADER = "idempotency_key,occurred_at,billable,received_at,reason";
const NON_BILLABLE_SHARE = 0.1;
const SAMPLE_MS = 50;

const TARGETS = {
  ratio_min: 0.5, // rows/s of ours ÷ rows/s of psql \copy
  rss_max_mb: 150, // peak RSS of the service process during an export
};

const USAGE = `usage: npm run bench -- export [--rows N] [--runs N] [--keep]
  --rows N   ledger rows of the exported site-month (default 1000000)
  --runs N   measured runs of each side, after one warm-up each (default 2)
  --keep     keep the ${BENCH_DATABASE} database afterwards
Prints progress on stderr and one JSON line on stdout; exits 1 when a target is missed.
`;


interface Options {
  rows: number;
  runs: number;
  keep: boolean;
}

function parseOptions(args: string[]): Options | "help" {
  const values = parseBenchArgs(args, { rows: { type: "string" }, runs: { type: "string" }, keep: { type: "boolean" } });
  if (values === "help") return "help";
  return { rows: numberOption("rows", values.rows, 1_000_000, 1), runs: numberOption("runs", values.runs, 2, 1), keep: values.keep === true };
}

const { log, started } = progressLog("export");
const mb = (kb: number) => round(kb / 1024);

/* ------------------------------------------------------------------ the consumer */

/**
 * Reads a CSV stream chunk by chunk: bytes, lines, SHA-256 of everything, and SHA-256 of
 * "<column 1>,<column 2>,<column 3>\n" of every line after the header (the invoice digest).
 * Keeps at most one partial line between chunks.
 */
class CsvSink {
  bytes = 0;
  lines = 0;
  header: string | undefined;
  readonly whole: Hash = createHash("sha256");
  readonly ledger: Hash = createHash("sha256");
  private carry: Buffer | undefined;
  private malformed = 0;

  push(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.whole.update(chunk);
    const buf = this.carry ? Buffer.concat([this.carry, chunk]) : chunk;
    const out = Buffer.allocUnsafe(buf.length);
    let used = 0;
    let start = 0;
    for (let end = buf.indexOf(10, start); end !== -1; start = end + 1, end = buf.indexOf(10, start)) {
      this.lines++;
      if (this.header === undefined) {
        this.header = buf.toString("utf8", start, end);
        continue;
      }
      const c1 = buf.indexOf(44, start);
      const c2 = c1 === -1 || c1 > end ? -1 : buf.indexOf(44, c1 + 1);
      const c3 = c2 === -1 || c2 > end ? -1 : buf.indexOf(44, c2 + 1);
      const cut = c3 === -1 || c3 > end ? end : c3; // cut -f1-3 of a line with fewer fields: the whole line
      if (cut === end) this.malformed++;
      used += buf.copy(out, used, start, cut);
      out[used++] = 10;
    }
    this.carry = start < buf.length ? Buffer.from(buf.subarray(start)) : undefined;
    if (used > 0) this.ledger.update(out.subarray(0, used));
  }

  finish(): { bytes: number; lines: number; data_rows: number; header: string | undefined; sha256: string; ledger_digest: string;
    trailing_partial_line: boolean; short_rows: number } {
    const trailing = this.carry !== undefined;
    return {
      bytes: this.bytes, lines: this.lines, data_rows: Math.max(0, this.lines - 1), header: this.header,
      sha256: this.whole.digest("hex"), ledger_digest: this.ledger.digest("hex"), trailing_partial_line: trailing, short_rows: this.malformed,
    };
  }
}

/* ------------------------------------------------------------------ memory of a process */

function procStatusKb(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const rss = /^VmRSS:\s+(\d+) kB/m.exec(status);
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(status);
    return rss && hwm ? { rss: Number(rss[1]), hwm: Number(hwm[1]) } : undefined;
  } catch {
    return undefined; // gone, or no /proc
  }
}

/** Resets the kernel's RSS high-water mark of a process of ours (Linux: echo 5 > clear_refs). */
function resetHwm(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** Samples a process's RSS every SAMPLE_MS until stopped; also remembers its last VmHWM. */
function sampleRss(pid: number) {
  let peak = 0;
  let hwm = 0;
  let samples = 0;
  let last = Date.now();
  let maxGap = 0;
  const take = () => {
    const now = Date.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
    const status = procStatusKb(pid);
    if (!status) return;
    samples++;
    peak = Math.max(peak, status.rss);
    hwm = Math.max(hwm, status.hwm);
  };
  take();
  const timer = setInterval(take, SAMPLE_MS);
  return {
    stop() {
      take();
      clearInterval(timer);
      return { peakKb: peak, hwmKb: hwm, samples, maxGapMs: maxGap };
    },
  };
}

/* ------------------------------------------------------------------ the service, in a child */

/** Child side: the real service, HTTP only, as `opsmantik serve` runs it; "stop" shuts it down. */
async function serveChild(): Promise<void> {
  // require, not import(): under tsx's CommonJS hooks a dynamic import() is Node's own, which cannot load TypeScript.
  const { testEnv } = require("../helpers/env") as typeof import("../helpers/env");
  Object.assign(process.env, testEnv(BENCH_DATABASE), { LOG_LEVEL: "silent" }); // env.ts points at the test database on import: ours again
  const { readConfig } = require("../../src/config") as typeof import("../../src/config");
  const { startService } = require("../../src/server") as typeof import("../../src/server");
  const service = await startService(readConfig(), { http: true, worker: false });
  process.on("message", async (message) => {
    if (message !== "stop") return;
    await service.stop();
    process.exit(0);
  });
  process.on("disconnect", () => process.exit(0)); // the parent went away: do not keep serving
  process.send!({ url: service.url!.replace("localhost", "127.0.0.1") });
}

interface Server {
  url: string;
  child: ChildProcess;
}

/**
 * The child compiles TypeScript with tsx's CommonJS hooks only, as src/cli/opsmantik.cjs does in
 * production, not with the `tsx` command's ESM loader (which this process runs under): that
 * loader runs in a worker thread of its own, about 25 MB of RSS that production does not have.
 */
async function startServer(): Promise<Server> {
  const child = fork(__filename, [], {
    env: { ...process.env, [CHILD_ROLE]: "server" },
    execArgv: ["--require", require.resolve("tsx/cjs")],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  return new Promise((resolve, reject) => {
    child.once("message", ({ url }: { url: string }) => resolve({ url, child }));
    child.once("exit", (code) => reject(new Error(`the bench server exited with code ${code} before starting`)));
  });
}

async function stopServer(server: Server | undefined): Promise<void> {
  if (!server || server.child.exitCode !== null) return;
  const exited = new Promise<void>((resolve) => server.child.once("exit", () => resolve()));
  server.child.send("stop");
  const timer = setTimeout(() => server.child.kill(), 15_000);
  await exited;
  clearTimeout(timer);
}

/* ------------------------------------------------------------------ one export each way */

interface Run {
  seconds: number;
  rows_per_s: number;
  mb_per_s: number;
  peak_rss_mb: number;
  rss_before_mb: number | null;
  rss_hwm_mb: number | null;
  rss_samples: number;
  max_sample_gap_ms: number;
}

interface Result {
  run: Run;
  out: ReturnType<CsvSink["finish"]>;
  digestHeader?: string;
}

function figures(seconds: number, out: ReturnType<CsvSink["finish"]>, memory: ReturnType<ReturnType<typeof sampleRss>["stop"]>,
  beforeKb: number | null, hwmReset: boolean): Run {
  return {
    seconds: round(seconds, 3),
    rows_per_s: Math.round(out.data_rows / seconds),
    mb_per_s: round(out.bytes / 2 ** 20 / seconds),
    peak_rss_mb: mb(Math.max(memory.peakKb, hwmReset ? memory.hwmKb : 0)),
    rss_before_mb: beforeKb === null ? null : mb(beforeKb),
    rss_hwm_mb: hwmReset ? mb(memory.hwmKb) : null,
    rss_samples: memory.samples,
    max_sample_gap_ms: memory.maxGapMs,
  };
}

async function exportOurs(server: Server, siteId: string, period: string, jwt: string): Promise<Result> {
  const pid = server.child.pid!;
  const beforeKb = procStatusKb(pid)?.rss ?? NaN;
  const hwmReset = resetHwm(pid);
  const sampler = sampleRss(pid);
  const sink = new CsvSink();
  const began = process.hrtime.bigint();
  const url = new URL(`/api/billing/dispute-export.csv?period=${period}&site=${siteId}`, server.url);
  const { status, digestHeader, error } = await new Promise<{ status: number; digestHeader?: string; error?: string }>((resolve, reject) => {
    const req = http.get(url, { headers: { authorization: `Bearer ${jwt}` }, agent: false }, (res) => {
      const digest = res.headers["x-invoice-ledger-digest"];
      res.on("data", (chunk: Buffer) => sink.push(chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, digestHeader: typeof digest === "string" ? digest : undefined }));
      res.on("aborted", () => resolve({ status: res.statusCode ?? 0, error: "response aborted (truncated export)" }));
      res.on("error", (e) => resolve({ status: res.statusCode ?? 0, error: e.message }));
    });
    req.on("error", reject);
  });
  const seconds = Number(process.hrtime.bigint() - began) / 1e9;
  const memory = sampler.stop();
  const out = sink.finish();
  if (status !== 200 || error) {
    throw new Error(`dispute export answered ${status}${error ? ` (${error})` : ""}: ${out.header ?? ""}`);
  }
  return { run: figures(seconds, out, memory, beforeKb, hwmReset), out, digestHeader };
}

/** The same CSV, byte for byte, straight from COPY: the columns of DISPUTE_EXPORT_HEADER, in the export's order. */
function baselineCopy(siteId: string, period: string): string {
  const start = `${period}-01`;
  const ts = (column: string) => `to_char(l.${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
  return `\\copy (select l.idempotency_key, ${ts("occurred_at")} as occurred_at, l.billable::text as billable, ` +
    `${ts("received_at")} as received_at, l.reason from app_public.ingest_idempotency l ` +
    `where l.site_id = '${siteId}' and l.occurred_at >= '${start}'::date and l.occurred_at < '${start}'::date + interval '1 month' ` +
    `order by l.idempotency_key::text collate "C", l.occurred_at) to stdout with (format csv, header)`;
}

async function exportBaseline(databaseUrl: string, siteId: string, period: string): Promise<Result> {
  const sink = new CsvSink();
  const began = process.hrtime.bigint();
  const child = spawn("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", databaseUrl, "-c", baselineCopy(siteId, period)],
    { stdio: ["ignore", "pipe", "pipe"] });
  const sampler = sampleRss(child.pid!);
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => { stderr += chunk.toString(); });
  child.stdout.on("data", (chunk: Buffer) => sink.push(chunk));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (exitCode) => resolve(exitCode));
  });
  const seconds = Number(process.hrtime.bigint() - began) / 1e9;
  const memory = sampler.stop();
  if (code !== 0) throw new Error(`psql exited with ${code}: ${stderr.trim()}`);
  const out = sink.finish();
  // psql starts small; its high-water mark as last read before it exited is its peak.
  return { run: figures(seconds, out, memory, null, true), out };
}

/* ------------------------------------------------------------------ the data */

/** The newest month whose grace (8 days after its end) has passed: the previous one, or the one before. */
function frozenPeriod(now = new Date()): string {
  const back = (months: number) => new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - months, 1));
  const previous = back(1);
  const graceEnds = new Date(Date.UTC(previous.getUTCFullYear(), previous.getUTCMonth() + 1, 9)); // 1 month + 8 days
  const month = now >= graceEnds ? previous : back(2);
  return `${month.getUTCFullYear()}-${String(month.getUTCMonth() + 1).padStart(2, "0")}`;
}

/** Seconds in a UTC month "YYYY-MM". */
function monthSeconds(period: string): number {
  const [year, month] = period.split("-").map(Number);
  return (Date.UTC(year, month, 1) - Date.UTC(year, month - 1, 1)) / 1000;
}

/* ------------------------------------------------------------------ main */

export async function main(args: string[]): Promise<number> {
  let options: Options | "help";
  try {
    options = parseOptions(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`bench export: ${error.message} (npm run bench -- export --help)\n`);
    return 2;
  }
  if (options === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
  const { rows, runs, keep } = options;

  const { default: pg } = await import("pg");
  const { testEnv } = await import("../helpers/env.js");
  const { readConfig } = await import("../../src/config.js");
  const { migrateDatabase } = await import("../../src/db/migrate.js");
  const { setup } = await import("../../src/setup/setup.js");
  const { signUserToken } = await import("../../src/auth/jwt.js");

  Object.assign(process.env, testEnv(BENCH_DATABASE), { LOG_LEVEL: "silent" });
  const config = readConfig();
  const loadStart = os.loadavg();
  const period = frozenPeriod();
  const periodStart = `${period}-01`;

  log(`database ${BENCH_DATABASE}: setup and migrate`);
  await setup(config, { recreate: true });
  await migrateDatabase(config);
  const rootUrl = new URL(config.rootDatabaseUrl);
  rootUrl.pathname = `/${config.databaseName}`;
  const root = new pg.Client({ connectionString: rootUrl.toString() });
  await root.connect();
  let server: Server | undefined;
  try {
    await root.query("set client_min_messages to warning");
    const { rows: [owner] } = await root.query("insert into app_public.users (email) values ('bench-export@opsmantik.test') returning id");
    const { rows: [site] } = await root.query("select id from app_private.create_site($1, 'bench export', 'shop.example')", [owner.id]);

    log(`ledger: ${rows.toLocaleString("en")} rows for period ${period}, ${NON_BILLABLE_SHARE * 100}% bots`);
    const began = Date.now();
    await root.query(
      `insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, received_at, billable, reason)
       select $1::uuid, gen_random_uuid(), t.at, date_trunc('milliseconds', t.at + random() * interval '5 seconds'), not t.bot,
              case when t.bot then 'bot' end
         from generate_series(1, $2::int) g,
              lateral (select date_trunc('milliseconds', to_timestamp($3::float8 + random() * $4::float8)) as at,
                              random() < $5::float8 as bot
                         where g is not null offset 0) t`, // correlated with g, or it is evaluated once for all rows
      [site.id, rows, Date.parse(`${periodStart}T00:00:00Z`) / 1000, monthSeconds(period), NON_BILLABLE_SHARE]);
    const inserted = Date.now();
    log("ledger: vacuum analyze…");
    await root.query("vacuum (analyze) app_public.ingest_idempotency");
    await root.query("checkpoint");
    const vacuumed = Date.now();
    log("freezing the invoice…");
    const { rows: [snapshot] } = await root.query(
      "select billable_events, non_billable_events, ledger_digest from app_public.freeze_invoice($1, $2::date)", [site.id, periodStart]);
    const frozen = Date.now();
    const { rows: [where] } = await root.query(
      `select (select count(*) from app_public.ingest_idempotency_default)::bigint as default_rows,
              (select sum(pg_total_relation_size(i.inhrelid)) from pg_inherits i
                where i.inhparent = 'app_public.ingest_idempotency'::regclass)::bigint as bytes`);
    const { rows: [pgInfo] } = await root.query(
      "select current_setting('server_version') as version, current_setting('shared_buffers') as shared_buffers, current_setting('work_mem') as work_mem");
    log(`ledger ready: ${Number(snapshot.billable_events).toLocaleString("en")} billable, ` +
      `${Number(snapshot.non_billable_events).toLocaleString("en")} not, digest ${snapshot.ledger_digest.slice(0, 16)}…`);

    const jwt = await signUserToken(config, owner.id, 3600);
    server = await startServer();
    log(`service up at ${server.url} (pid ${server.child.pid}, RSS ${mb(procStatusKb(server.child.pid!)?.rss ?? NaN)} MB)`);

    const oursRuns: Result[] = [];
    const baselineRuns: Result[] = [];
    const describe = (label: string, { run, out }: Result) =>
      log(`${label}: ${out.data_rows.toLocaleString("en")} rows, ${run.seconds} s, ${run.rows_per_s.toLocaleString("en")} rows/s, ` +
        `peak RSS ${run.peak_rss_mb} MB${label.startsWith("ours") ? ` (before ${run.rss_before_mb} MB)` : ""}`);
    for (let i = 0; i <= runs; i++) {
      const label = i === 0 ? "warm-up" : `run ${i}/${runs}`;
      const ours = await exportOurs(server, site.id, period, jwt);
      describe(`ours, ${label}`, ours);
      const baseline = await exportBaseline(config.databaseUrl, site.id, period);
      describe(`psql \\copy, ${label}`, baseline);
      oursRuns.push(ours);
      baselineRuns.push(baseline);
    }
    await stopServer(server);
    server = undefined;

    const measuredOurs = oursRuns.slice(1);
    const measuredBaseline = baselineRuns.slice(1);
    const best = (list: Result[]) => list.reduce((a, b) => (b.run.rows_per_s > a.run.rows_per_s ? b : a));
    const bestOurs = best(measuredOurs);
    const bestBaseline = best(measuredBaseline);
    const peakRss = Math.max(...oursRuns.map((r) => r.run.peak_rss_mb));
    const ratio = round(bestOurs.run.rows_per_s / bestBaseline.run.rows_per_s, 3);

    const expectedRows = Number(snapshot.billable_events) + Number(snapshot.non_billable_events);
    const all = [...oursRuns, ...baselineRuns];
    const correctness = {
      expected_rows: expectedRows,
      header_ok: all.every((r) => r.out.header === HEADER),
      rows_ok: all.every((r) => r.out.data_rows === expectedRows && !r.out.trailing_partial_line && r.out.short_rows === 0),
      snapshot_digest: snapshot.ledger_digest,
      export_digests: [...new Set(oursRuns.map((r) => r.out.ledger_digest))],
      header_digest_ok: oursRuns.every((r) => r.digestHeader === snapshot.ledger_digest),
      // Byte-identical CSV from both: the baseline exported exactly what ours did.
      same_bytes_as_baseline: new Set(all.map((r) => r.out.sha256)).size === 1,
    };
    const digestMatches = oursRuns.every((r) => r.out.ledger_digest === snapshot.ledger_digest) && correctness.header_digest_ok;

    const pass = {
      ratio: ratio >= TARGETS.ratio_min,
      rss: peakRss < TARGETS.rss_max_mb,
      digest: digestMatches,
      complete: correctness.header_ok && correctness.rows_ok && correctness.same_bytes_as_baseline,
    };
    const ok = Object.values(pass).every(Boolean);
    const summarize = (best: Result, list: Result[]) => ({
      ...best.run,
      peak_rss_mb: round(Math.max(...list.map((r) => r.run.peak_rss_mb))),
      runs: list.map((r) => r.run),
    });
    const report = {
      benchmark: "export",
      ok,
      pass,
      targets: TARGETS,
      rows: bestOurs.out.data_rows,
      bytes: bestOurs.out.bytes,
      period,
      ours: { ...summarize(bestOurs, oursRuns), rss_before_mb: oursRuns[0].run.rss_before_mb },
      baseline: summarize(bestBaseline, baselineRuns),
      ratio,
      digest_matches: digestMatches,
      correctness,
      ledger: {
        rows, non_billable_share: NON_BILLABLE_SHARE, insert_s: round((inserted - began) / 1000), vacuum_analyze_s: round((vacuumed - inserted) / 1000),
        freeze_s: round((frozen - vacuumed) / 1000), default_partition_rows: Number(where.default_rows), size_mb: round(Number(where.bytes) / 2 ** 20),
      },
      settings: {
        runs, warmup_runs: 1, rss_sample_ms: SAMPLE_MS,
        figures: "seconds and rows/s of the best measured run of each side; peak RSS over every request of that side, warm-up included",
        ours: "the service (startService, HTTP only) in a child process; GET over loopback with an owner's JWT; RSS of that process",
        baseline: "psql -c \"\\copy (select the export's columns, rows and order) to stdout with (format csv, header)\" as the database owner; RSS of psql",
        consumer: "both outputs read by this process alike: bytes, lines, SHA-256 whole and of cut -d, -f1-3 of the data rows",
      },
      machine: machineInfo(pgInfo, loadStart),
      total_s: round((Date.now() - started) / 1000),
    };
    log(`ours ${bestOurs.run.rows_per_s.toLocaleString("en")} rows/s vs psql ${bestBaseline.run.rows_per_s.toLocaleString("en")} rows/s ` +
      `(ratio ${ratio}), peak RSS ${peakRss} MB, digest ${digestMatches ? "matches" : "DIFFERS"}`);
    return finishReport(log, report, pass);
  } finally {
    await stopServer(server).catch(() => server?.child.kill());
    await root.end();
    await dropBenchDatabase(config.rootDatabaseUrl, BENCH_DATABASE, keep, log);
  }
}

if (process.env[CHILD_ROLE] === "server") {
  serveChild().catch((error: Error) => {
    process.stderr.write(`bench export server failed: ${error.stack ?? error.message}\n`);
    process.exit(1);
  });
}
