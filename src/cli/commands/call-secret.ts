/* `call-secret rotate|retire`: change a site's call-event signing secret without downtime. */
import { readConfig } from "../../config";
import { Command, CommandError, requiredUuid } from "../command";
import { withOwnerClient } from "../owner-client";

export const callSecretRotate: Command = {
  words: ["call-secret", "rotate"],
  summary: "Issue a new call-event secret; the old one stays valid until `call-secret retire`.",
  usage: "npx opsmantik call-secret rotate --site ID [--json]",
  options: { site: { type: "string" } },
  async run(values) {
    const siteId = requiredUuid(values, "site");
    const secret = await withOwnerClient(readConfig(), async (db) => {
      const { rows } = await db.query<{ secret: string | null }>("select app_private.rotate_call_event_secret($1) as secret", [siteId]);
      if (!rows[0]?.secret) throw new CommandError("site_not_found", `no site has the id ${siteId}`);
      return rows[0].secret;
    });
    return {
      json: { site_id: siteId, call_event_secret: secret },
      text: [`new call-event secret: ${secret}   (shown once; the previous secret is still accepted until \`call-secret retire\`)`],
    };
  },
};

export const callSecretRetire: Command = {
  words: ["call-secret", "retire"],
  summary: "Stop accepting a site's previous call-event secret.",
  usage: "npx opsmantik call-secret retire --site ID [--json]",
  options: { site: { type: "string" } },
  async run(values) {
    const siteId = requiredUuid(values, "site");
    await withOwnerClient(readConfig(), async (db) => {
      const { rows } = await db.query("select app_private.retire_call_event_secret($1) as retired", [siteId]);
      if (rows.length === 0 || rows[0].retired === null) throw new CommandError("site_not_found", `no site has the id ${siteId}`);
    });
    return { json: { site_id: siteId, retired: true }, text: ["the previous call-event secret is no longer accepted"] };
  },
};
