/*
 * graphile-worker in library mode. Tasks are the files of tasks/ (the file name is the task
 * name), the schedule is tasks/crontab. We handle signals ourselves so that HTTP and worker
 * stop together and in-flight jobs finish before the pool closes.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { Logger as WorkerLogger, run, Runner, Task, TaskList } from "graphile-worker";
import pg from "pg";
import { PROJECT_ROOT } from "../config";
import { logger } from "../logger";

export const TASKS_DIR = path.join(PROJECT_ROOT, "tasks");

export function loadTaskList(directory = TASKS_DIR): TaskList {
  const tasks: TaskList = {};
  for (const file of readdirSync(directory).sort()) {
    const match = /^([a-z][a-z0-9_]*)\.ts$/.exec(file);
    if (!match) continue;
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const loaded = require(path.join(directory, file)) as { default?: Task };
    if (typeof loaded.default !== "function") throw new Error(`tasks/${file} must export a task function as default`);
    tasks[match[1]] = loaded.default;
  }
  return tasks;
}

const workerLogger = new WorkerLogger((scope) => (level, message, meta) => {
  const child = logger.child({ component: "worker", ...scope });
  const method = level === "error" ? "error" : level === "warning" ? "warn" : level === "info" ? "info" : "debug";
  child[method](meta ?? {}, message);
});

/** Jobs one worker process runs at once (uploads of two sites, say, side by side). */
export const WORKER_CONCURRENCY = 2;

export async function startWorker(pool: pg.Pool, { concurrency = WORKER_CONCURRENCY } = {}): Promise<Runner> {
  // No localQueue: with it, graphile-worker 0.17 can run two jobs of one named queue at once
  // (graphile/worker#621), and a site's upload runs must take turns (migration 000038).
  const runner = await run({
    pgPool: pool,
    taskList: loadTaskList(),
    crontab: readFileSync(path.join(TASKS_DIR, "crontab"), "utf8"),
    concurrency,
    noHandleSignals: true,
    logger: workerLogger,
  });
  // Report liveness at once rather than at the next minute boundary.
  await runner.addJob("worker_heartbeat", {}, { jobKey: "worker_heartbeat:startup", maxAttempts: 1 });
  return runner;
}
