/*
 * The servers under test, run in a child process of the ingest benchmark so that the load
 * generator does not share their event loop (it would inflate latencies and steal the loop):
 *   ours      the real service (startService, HTTP only), exactly as production runs it;
 *   baseline  a bare node:http handler that parses the same JSON body and does one plain INSERT
 *             per event into an unpartitioned table, with a pool as large as ours.
 * Both listen on port 0; the URLs go to the parent over IPC, and "stop" shuts both down.
 */
import "../../src/polyfills";
import { createServer, IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import pg from "pg";
import { readConfig } from "../../src/config";
import { startService } from "../../src/server";

const BASELINE_POOL_SIZE = 10; // makePools' default for the authenticator pool

const BASELINE_INSERT = `insert into public.bench_baseline
  (site, id, occurred_at, type, visitor_id, url, referrer, title, props, consent, device)
  values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`;

interface BaselineEvent {
  id?: unknown; ts?: unknown; type?: unknown; visitor_id?: unknown; url?: unknown; referrer?: unknown;
  title?: unknown; props?: unknown; consent?: unknown; device?: unknown;
}

function reply(res: ServerResponse, status: number, body: unknown, origin?: string): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string | number> = { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text) };
  if (origin) headers["access-control-allow-origin"] = origin;
  res.writeHead(status, headers).end(text);
}

const json = (value: unknown) => (value === undefined || value === null ? null : JSON.stringify(value));

async function baselineHandler(pool: pg.Pool, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== "POST" || req.url !== "/api/sync") return reply(res, 404, { error: "not_found" });
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  let body: { site?: unknown; events?: unknown };
  try {
    body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    return reply(res, 400, { error: "invalid_json" });
  }
  const events = body?.events;
  if (typeof body?.site !== "string" || !Array.isArray(events) || events.length < 1 || events.length > 100) {
    return reply(res, 400, { error: "invalid_envelope" });
  }
  // One INSERT per event; a batch in one transaction, as ours stores a request all or nothing.
  const client = await pool.connect();
  try {
    if (events.length > 1) await client.query("begin");
    for (const event of events as BaselineEvent[]) {
      await client.query(BASELINE_INSERT, [body.site, event.id, event.ts, event.type, event.visitor_id, event.url,
        event.referrer || null, event.title ?? null, json(event.props ?? {}), json(event.consent), json(event.device)]);
    }
    if (events.length > 1) await client.query("commit");
  } catch (error) {
    if (events.length > 1) await client.query("rollback").catch(() => {});
    return reply(res, 500, { error: "ingest_unavailable", message: (error as Error).message });
  } finally {
    client.release();
  }
  reply(res, 200, { accepted: events.length, duplicates: 0, rejected: [] }, req.headers.origin);
}

async function main(): Promise<void> {
  const config = readConfig();
  const service = await startService(config, { http: true, worker: false });
  const pool = new pg.Pool({ connectionString: config.databaseUrl, max: BASELINE_POOL_SIZE, application_name: "opsmantik-bench-baseline" });
  const baseline = createServer((req, res) => {
    baselineHandler(pool, req, res).catch((error: Error) => reply(res, 500, { error: "internal", message: error.message }));
  });
  await new Promise<void>((resolve) => baseline.listen(0, "127.0.0.1", resolve));

  process.on("message", async (message) => {
    if (message !== "stop") return;
    baseline.closeIdleConnections();
    await new Promise<void>((resolve) => baseline.close(() => resolve()));
    await pool.end();
    await service.stop();
    process.exit(0);
  });
  // The parent going away (crash, Ctrl-C) must not leave us serving.
  process.on("disconnect", () => process.exit(0));
  process.send!({
    ours: service.url!.replace("localhost", "127.0.0.1"),
    baseline: `http://127.0.0.1:${(baseline.address() as AddressInfo).port}`,
  });
}

main().catch((error: Error) => {
  process.stderr.write(`bench servers failed: ${error.stack ?? error.message}\n`);
  process.exit(1);
});
