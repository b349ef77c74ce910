/* What every benchmark shares: option parsing, progress lines, rounding. */
import os from "node:os";
import { parseArgs, ParseArgsConfig } from "node:util";
import pg from "pg";

/** A bad option: the benchmark prints its usage and exits 2. */
export class UsageError extends Error {}

type OptionSpec = NonNullable<ParseArgsConfig["options"]>;

/** Parses `--name value` options strictly (plus --help); "help" when help was asked for. */
export function parseBenchArgs(args: string[], options: OptionSpec): Record<string, string | boolean | undefined> | "help" {
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args, strict: true, allowPositionals: false, options: { ...options, help: { type: "boolean", short: "h" } } }));
  } catch (error) {
    throw new UsageError((error as Error).message.split("\n")[0]);
  }
  return values.help ? "help" : (values as Record<string, string | boolean | undefined>);
}

/** A numeric option with its default and lower bound. */
export function numberOption(name: string, raw: string | boolean | undefined, fallback: number, min: number, integer = true): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (typeof raw !== "string" || !Number.isFinite(value) || value < min || (integer && !Number.isInteger(value))) {
    throw new UsageError(`--${name} must be ${integer ? "an integer" : "a number"} of at least ${min} (got "${raw}")`);
  }
  return value;
}

export const round = (value: number, digits = 1) => Math.round(value * 10 ** digits) / 10 ** digits;

/** Progress on stderr, stamped with seconds since the benchmark started (stdout is for the JSON line). */
export function progressLog(name: string): { log: (line: string) => void; started: number } {
  const started = Date.now();
  const log = (line: string) =>
    process.stderr.write(`[bench ${name} +${((Date.now() - started) / 1000).toFixed(0).padStart(3)}s] ${line}\n`);
  return { log, started };
}

/** The machine a figure was measured on, for the JSON line. */
export function machineInfo(postgres: Record<string, string>, loadBefore: number[]): Record<string, unknown> {
  return {
    cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, memory_gb: round(os.totalmem() / 2 ** 30),
    node: process.version, ...Object.fromEntries(Object.entries(postgres).map(([k, v]) => [k === "version" ? "postgres" : k, v])),
    loadavg_before: loadBefore.map((value) => round(value, 2)), loadavg_after: os.loadavg().map((value) => round(value, 2)),
  };
}

/** Prints the verdict on stderr and the one JSON line on stdout; the exit code says whether every target was met. */
export function finishReport(log: (line: string) => void, report: Record<string, unknown>, pass: Record<string, boolean>): number {
  const missed = Object.entries(pass).filter(([, value]) => !value).map(([key]) => key);
  log(missed.length === 0 ? "all targets met" : `targets missed: ${missed.join(", ")}`);
  process.stdout.write(`${JSON.stringify(report)}\n`);
  return missed.length === 0 ? 0 : 1;
}

/** Drops a benchmark's own database, unless asked to keep it. */
export async function dropBenchDatabase(rootDatabaseUrl: string, name: string, keep: boolean, log: (line: string) => void): Promise<void> {
  if (keep) {
    log(`kept database ${name}`);
    return;
  }
  const admin = new pg.Client({ connectionString: rootDatabaseUrl });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
  } finally {
    await admin.end();
  }
  log(`dropped database ${name}`);
}
