/* Payload checks shared by tasks: a job's payload is JSON from the queue, so it is checked. */
export function assertObjectPayload(task: string, payload: unknown): asserts payload is Record<string, unknown> {
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    throw new Error(`${task}: payload must be an object`);
  }
}
