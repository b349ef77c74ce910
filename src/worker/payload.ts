/* Payload checks shared by tasks: a job's payload is JSON from the queue, so it is checked. */
import { isUuid } from "../uuid";

export function assertObjectPayload(task: string, payload: unknown): asserts payload is Record<string, unknown> {
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    throw new Error(`${task}: payload must be an object`);
  }
}

/** The named fields of an object payload, each a UUID; throws naming the task and the shape otherwise. */
export function uuidFields<const K extends string>(task: string, payload: unknown, names: readonly K[]): Record<K, string> {
  assertObjectPayload(task, payload);
  if (!names.every((name) => isUuid(payload[name]))) {
    throw new Error(`${task}: payload must be {${names.map((name) => `${name}: uuid`).join(", ")}}`);
  }
  return Object.fromEntries(names.map((name) => [name, payload[name]])) as Record<K, string>;
}
