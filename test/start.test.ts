/*
 * `npm start` end to end, as a real process: on a database that does not exist yet it must set
 * up, migrate, serve HTTP and GraphQL, run the worker (whose heartbeat the health check reads),
 * and on SIGTERM drain and exit 0. Nothing is mocked: the only way to know the process stops
 * cleanly is to signal one.
 */
import { ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import pg from "pg";
import { ENV_FILE, PROJECT_ROOT } from "../src/config";
import { testEnv } from "./helpers/env";

const START_DATABASE = "opsmantik_t_start";
const CLI = "src/cli/opsmantik.cjs";

async function dropStartDatabase(): Promise<void> {
  const client = new pg.Client({ connectionString: testEnv().ROOT_DATABASE_URL });
  await client.connect();
  try {
    await client.query(`drop database if exists ${START_DATABASE} with (force)`);
  } finally {
    await client.end();
  }
}

/** A port nobody uses right now: the kernel picks one, we release it and hand it to the CLI. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** The developer's .env as it was: tests must never create or rewrite it. */
function envFileState(): { mtimeMs: number; sha256: string } | null {
  if (!existsSync(ENV_FILE)) return null;
  return { mtimeMs: statSync(ENV_FILE).mtimeMs, sha256: createHash("sha256").update(readFileSync(ENV_FILE)).digest("hex") };
}
const envFileBefore = envFileState();

let child: ChildProcess | undefined;
let output = "";
let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

beforeAll(dropStartDatabase);

afterAll(async () => {
  // Only if a test failed half-way: never leave a server running or the database behind.
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill("SIGKILL");
    await exited;
  }
  await dropStartDatabase();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("npm start", () => {
  test("package.json's start script is the CLI's start command", () => {
    const pkg = JSON.parse(readFileSync(path.join(PROJECT_ROOT, "package.json"), "utf8"));
    expect(pkg.scripts.start).toBe(`node ${CLI} start`);
    expect(pkg.bin.opsmantik).toBe(CLI);
  });

  test("sets up a new database, serves health and GraphQL with a live worker, and stops on SIGTERM with exit 0", async () => {
    const port = await freePort();
    child = spawn(process.execPath, [CLI, "start"], {
      cwd: PROJECT_ROOT,
      // NODE_ENV=production: the real environment holds every setting, so no .env is written.
      env: { ...process.env, ...testEnv(START_DATABASE), NODE_ENV: "production", PORT: String(port) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout!.on("data", (chunk) => (output += chunk));
    child.stderr!.on("data", (chunk) => (output += chunk));
    exited = new Promise((resolve) => child!.once("exit", (code, signal) => resolve({ code, signal })));
    const base = `http://localhost:${port}`;

    // Poll until healthy, for at most 60 s; give up at once if the process died.
    let health: { status: number; body: unknown } | undefined;
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && child.exitCode === null) {
      try {
        const response = await fetch(`${base}/api/health`);
        health = { status: response.status, body: await response.json() };
        if (response.status === 200 && (health.body as { status?: string }).status === "ok") break;
      } catch {
        // Not listening yet.
      }
      await sleep(250);
    }
    if (child.exitCode !== null) throw new Error(`npm start exited early with ${child.exitCode}:\n${output}`);
    expect(health).toEqual({ status: 200, body: { status: "ok", db: "ok", migrations: "current", worker: "ok" } });

    // start did the setup itself (the database did not exist) and printed where to find things.
    expect(output).toContain(`created database ${START_DATABASE}`);
    expect(output).toContain(`${base}/graphql`);
    expect(output).toContain(`${base}/api/health`);

    // The printed GraphQL URL really serves GraphQL.
    const graphql = await fetch(`${base}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ query: "{ __typename }" }),
    });
    expect(graphql.status).toBe(200);
    expect(await graphql.json()).toEqual({ data: { __typename: "Query" } });

    child.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise((resolve) => (timer = setTimeout(() => resolve("still running after 30 s"), 30_000)));
    const outcome = await Promise.race([exited, timeout]);
    clearTimeout(timer);
    expect(outcome).toEqual({ code: 0, signal: null });
    expect(output).toMatch(/SIGTERM received/);
    expect(output).toMatch(/^stopped$/m);

    // The port is released: a stopped server must not keep accepting connections.
    await expect(fetch(`${base}/api/health`)).rejects.toThrow();
  }, 120_000);
});

test("the developer's .env was neither created nor changed", () => {
  expect(envFileState()).toEqual(envFileBefore);
});
