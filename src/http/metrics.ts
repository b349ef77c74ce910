/*
 * GET /api/metrics for Prometheus: the samples of app_private.metrics() in the text exposition
 * format (version 0.0.4). Closed unless METRICS_TOKEN is set; then it takes exactly
 * `Authorization: Bearer <METRICS_TOKEN>`, compared in constant time.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Request, Response } from "express";
import type pg from "pg";
import { logger } from "../logger";
import { sendError } from "./errors";

interface Sample {
  name: string;
  help: string;
  kind: "gauge" | "counter";
  labels: Record<string, string>;
  value: number | null;
}

const digest = (text: string): Buffer => createHash("sha256").update(text).digest();

/** Text escaped as the exposition format asks of HELP lines: backslash and newline. */
const escaped = (text: string): string => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");

/** Label values escape double quotes too. */
function labelSet(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([key, value]) => `${key}="${escaped(value).replace(/"/g, '\\"')}"`);
  return pairs.length ? `{${pairs.join(",")}}` : "";
}

/** One HELP and TYPE per metric, then its samples; a sample with no value yet (null) is left out. */
export function exposition(samples: Sample[]): string {
  const byName = new Map<string, Sample[]>();
  for (const sample of samples) {
    const group = byName.get(sample.name);
    if (group) group.push(sample);
    else byName.set(sample.name, [sample]);
  }
  const lines: string[] = [];
  for (const [name, group] of byName) {
    lines.push(`# HELP ${name} ${escaped(group[0].help)}`, `# TYPE ${name} ${group[0].kind}`);
    for (const sample of group) if (sample.value !== null) lines.push(`${name}${labelSet(sample.labels)} ${sample.value}`);
  }
  return `${lines.join("\n")}\n`;
}

export function metricsHandler(token: string | undefined, ownerPool: pg.Pool) {
  const expected = token === undefined ? undefined : digest(`Bearer ${token}`);
  return async (req: Request, res: Response): Promise<void> => {
    res.setHeader("Cache-Control", "no-store");
    if (!expected) {
      sendError(res, 404, "metrics_closed", "Metrics are not served here: set METRICS_TOKEN to open them.");
      return;
    }
    // Hashing both sides gives equal lengths, so the comparison takes the same time whatever was sent.
    if (!timingSafeEqual(digest(req.headers.authorization ?? ""), expected)) {
      sendError(res, 401, "unauthorized", "Metrics need the bearer token this server was given.", { "WWW-Authenticate": 'Bearer realm="metrics"' });
      return;
    }
    let samples: Sample[];
    try {
      ({ rows: samples } = await ownerPool.query<Sample>("select name, help, kind, labels, value from app_private.metrics()"));
    } catch (error) {
      logger.error({ err: (error as Error).message }, "metrics: the database could not be read");
      sendError(res, 503, "metrics_unavailable", "The database cannot be read right now.");
      return;
    }
    res.type("text/plain; version=0.0.4; charset=utf-8").send(exposition(samples));
  };
}
