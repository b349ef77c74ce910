/*
 * `npm run bench -- <name> [options]`: runs one benchmark, which prints its progress on stderr
 * and one JSON line of figures on stdout. Benchmarks are loaded only when chosen, so `--help`
 * and a mistyped name answer at once.
 */
import "../../src/polyfills";

interface Benchmark {
  summary: string;
  load(): Promise<{ main(args: string[]): Promise<number> }>;
}

const BENCHMARKS: Record<string, Benchmark> = {
  ingest: {
    summary: "POST /api/sync against a bare INSERT-per-event baseline: single events, 10-event batches, hot site vs 1,000 sites, 10M-row ledger, exact counts",
    load: () => import("./ingest.js"),
  },
  erasure: {
    summary: "erase a visitor with 10k events from 10M events over 1,000 sites, against a plain DELETE of a twin visitor's events: seconds",
    load: () => import("./erasure.js"),
  },
  export: {
    summary: "GET /api/billing/dispute-export.csv of a frozen 1M-row month against psql \\copy of the same rows: rows/s, peak RSS, digest",
    load: () => import("./export.js"),
  },
  oci: {
    summary: "100k queued conversions delivered by deliverSiteConversions through the Google fakes against the fake fed pre-built batches: conversions/s per rail, exactly once",
    load: () => import("./oci.js"),
  },
};

function help(): string {
  const width = Math.max(...Object.keys(BENCHMARKS).map((name) => name.length));
  return [
    "usage: npm run bench -- <name> [options]   (npm run bench -- <name> --help for its options)",
    "",
    "benchmarks:",
    ...Object.entries(BENCHMARKS).map(([name, { summary }]) => `  ${name.padEnd(width)}  ${summary}`),
    "",
  ].join("\n");
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    (name === undefined ? process.stderr : process.stdout).write(help());
    return name === undefined ? 2 : 0;
  }
  const benchmark = Object.hasOwn(BENCHMARKS, name) ? BENCHMARKS[name] : undefined;
  if (!benchmark) {
    process.stderr.write(`unknown benchmark "${name}": choose one of ${Object.keys(BENCHMARKS).join(", ")} (npm run bench -- --help)\n`);
    return 2;
  }
  return (await benchmark.load()).main(rest);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
    process.exit(1);
  },
);
