/* `erasure request`: the right to erasure from the command line (the worker carries it out). */
import { readConfig } from "../../config";
import { Command, requiredUuid, UsageError } from "../command";
import { withOwnerClient } from "../owner-client";

const SUBJECT_OPTIONS = { "visitor-id": "visitor_id", email: "email", phone: "phone", gclid: "click_id" } as const;

export const erasureRequest: Command = {
  words: ["erasure", "request"],
  summary: "Ask for everything held about a subject on a site to be erased; prints the request id (status in GraphQL).",
  usage: "npx opsmantik erasure request --site ID (--visitor-id V | --email E | --phone P | --gclid G) [--json]",
  options: { site: { type: "string" }, "visitor-id": { type: "string" }, email: { type: "string" }, phone: { type: "string" }, gclid: { type: "string" } },
  async run(values) {
    const siteId = requiredUuid(values, "site");
    const given = (Object.keys(SUBJECT_OPTIONS) as (keyof typeof SUBJECT_OPTIONS)[]).filter((name) => typeof values[name] === "string");
    if (given.length !== 1) throw new UsageError("name the subject with exactly one of --visitor-id, --email, --phone or --gclid");
    const kind = SUBJECT_OPTIONS[given[0]];
    const request = await withOwnerClient(readConfig(), async (db) =>
      (await db.query("select id, status from app_public.request_erasure($1, $2, $3)", [siteId, kind, values[given[0]]])).rows[0]);
    return { json: { id: request.id }, text: [`erasure request ${request.id} (${kind}) is ${request.status}; the worker carries it out`] };
  },
};
