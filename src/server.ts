/*
 * The running service: HTTP (express + PostGraphile) and, unless asked not to, the worker, in
 * one process sharing the pools. stop() drains both: HTTP stops accepting, in-flight jobs
 * finish, pending denial records are written, then the pools close.
 */
import { createServer, Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Runner } from "graphile-worker";
import { postgraphile } from "postgraphile";
import { grafserv } from "postgraphile/grafserv/express/v4";
import { makeTokenVerifier } from "./auth/jwt";
import type { Config } from "./config";
import { flushDenials } from "./db/denials";
import { makePools, Pools } from "./db/pools";
import { makePreset } from "./graphql/preset";
import { addFallbackHandlers, makeApp, makeRequestListener } from "./http/app";
import { holdYoungGeneration } from "./young-generation";
import { startWorker } from "./worker/runner";

export interface Service {
  url: string | undefined;
  pools: Pools;
  stop(): Promise<void>;
}

export async function startService(config: Config, { http = true, worker = true } = {}): Promise<Service> {
  // Start-up only: PostGraphile builds its schema (~50 MB that lives on) after we listen; see young-generation.ts.
  const releaseYoungGeneration = holdYoungGeneration();
  const pools = makePools(config);
  let server: Server | undefined;
  let release: (() => Promise<void>) | undefined;
  let runner: Runner | undefined;
  let url: string | undefined;
  try {
    if (http) {
      const deps = { config, pools, verifyToken: makeTokenVerifier(config) };
      const app = makeApp(deps);
      server = createServer(makeRequestListener(app, deps));
      const pgl = postgraphile(makePreset(config, pools));
      // Settled either way: a failed build is grafserv's to report, not a reason to hold on.
      Promise.resolve(pgl.getSchemaResult()).then(releaseYoungGeneration, releaseYoungGeneration);
      release = async () => {
        await pgl.release();
      };
      await pgl.createServ(grafserv).addTo(app, server, false);
      addFallbackHandlers(app);
      await new Promise<void>((resolve, reject) => {
        server!.once("error", reject);
        server!.listen(config.port, resolve);
      });
      url = `http://localhost:${(server.address() as AddressInfo).port}`;
    }
    if (worker) runner = await startWorker(pools.owner);
    if (!http) releaseYoungGeneration();
  } catch (error) {
    releaseYoungGeneration();
    server?.close();
    await release?.();
    await pools.end();
    throw error;
  }
  return {
    url,
    pools,
    async stop() {
      if (server) {
        const closed = new Promise<void>((resolve) => server!.close(() => resolve()));
        server.closeIdleConnections();
        await closed;
      }
      await runner?.stop();
      await flushDenials();
      await release?.();
      await pools.end();
    },
  };
}
