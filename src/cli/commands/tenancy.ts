/* `user create`, `site create`, `token`, `api-key create|revoke`: tenancy from the command line. */
import { parseTtl, signUserToken } from "../../auth/jwt";
import { readConfig } from "../../config";
import { Command, CommandError, optionalInteger, required, requiredUuid, UsageError } from "../command";
import { withOwnerClient } from "../owner-client";

export const userCreate: Command = {
  words: ["user", "create"],
  summary: "Create a dashboard user.",
  usage: "npx opsmantik user create --email E [--name N] [--platform-admin] [--json]",
  options: { email: { type: "string" }, name: { type: "string" }, "platform-admin": { type: "boolean" } },
  async run(values) {
    const email = required(values, "email");
    const { id } = await withOwnerClient(readConfig(), async (db) => {
      const { rows } = await db.query(
        "insert into app_public.users (email, display_name, is_platform_admin) values ($1, $2, $3) returning id",
        [email, values.name ?? null, values["platform-admin"] === true],
      );
      return rows[0];
    });
    return { json: { id }, text: [`user ${id} created for ${email}`] };
  },
};

export const siteCreate: Command = {
  words: ["site", "create"],
  summary: "Create a site owned by an existing user; prints its id, public key and call-event secret.",
  usage:
    "npx opsmantik site create --name N --domain D --owner EMAIL [--consent-mode required|implied]\n" +
    "    [--monthly-event-quota N] [--rate-limit-per-minute N] [--allowed-origin URL]... [--timezone TZ] [--currency CUR] [--json]",
  options: {
    name: { type: "string" }, domain: { type: "string" }, owner: { type: "string" },
    "consent-mode": { type: "string" }, "monthly-event-quota": { type: "string" },
    "rate-limit-per-minute": { type: "string" }, "allowed-origin": { type: "string", multiple: true },
    timezone: { type: "string" }, currency: { type: "string" },
  },
  async run(values) {
    const name = required(values, "name");
    const domain = required(values, "domain").toLowerCase();
    const ownerEmail = required(values, "owner");
    const consentMode = (values["consent-mode"] as string | undefined) ?? "required";
    if (!["required", "implied"].includes(consentMode)) throw new UsageError("--consent-mode must be required or implied");
    const quota = optionalInteger(values, "monthly-event-quota");
    const rateLimit = optionalInteger(values, "rate-limit-per-minute") ?? 600;
    const origins = ((values["allowed-origin"] as string[] | undefined) ?? []).map((o) => o.trim().replace(/\/$/, "").toLowerCase());
    const site = await withOwnerClient(readConfig(), async (db) => {
      const { rows: owners } = await db.query("select id from app_public.users where email = $1", [ownerEmail]);
      if (owners.length === 0) {
        throw new CommandError("user_not_found", `no user has the email ${ownerEmail}: create one with \`npx opsmantik user create --email ${ownerEmail}\``);
      }
      await db.query("begin");
      try {
        const { rows: [site] } = await db.query(
          "select id, public_key from app_private.create_site($1, $2, $3, $4, $5, $6, $7, $8, $9)",
          [owners[0].id, name, domain, consentMode, quota ?? null, rateLimit, origins,
           (values.timezone as string | undefined) ?? "UTC", ((values.currency as string | undefined) ?? "USD").toUpperCase()],
        );
        // A separate statement: the secret is written by a trigger of the insert above, which
        // the same statement's snapshot would not see.
        const { rows: [secret] } = await db.query(
          "select current_secret from app_private.call_event_secrets where site_id = $1", [site.id],
        );
        if (!secret) throw new Error("the site was created without a call-event secret");
        await db.query("commit");
        return { ...site, call_event_secret: secret.current_secret };
      } catch (error) {
        await db.query("rollback");
        throw error;
      }
    });
    return {
      json: { id: site.id, public_key: site.public_key, call_event_secret: site.call_event_secret },
      text: [
        `site ${site.id} created`,
        `public key:        ${site.public_key}`,
        `call-event secret: ${site.call_event_secret}   (shown once: store it in your call-tracking provider)`,
      ],
    };
  },
};

export const token: Command = {
  words: ["token"],
  summary: "Print a dashboard JWT for a user (HS256 with JWT_SECRET).",
  usage: "npx opsmantik token --email E [--ttl 1h] [--json]",
  options: { email: { type: "string" }, ttl: { type: "string" } },
  async run(values) {
    const email = required(values, "email");
    let ttl: number;
    try {
      ttl = parseTtl((values.ttl as string | undefined) ?? "1h");
    } catch (error) {
      throw new UsageError(`--ttl: ${(error as Error).message}`);
    }
    const config = readConfig();
    const userId = await withOwnerClient(config, async (db) => {
      const { rows } = await db.query("select id from app_public.users where email = $1", [email]);
      if (rows.length === 0) throw new CommandError("user_not_found", `no user has the email ${email}`);
      return rows[0].id as string;
    });
    let jwt: string;
    try {
      jwt = await signUserToken(config, userId, ttl);
    } catch (error) {
      throw new CommandError("cannot_sign", (error as Error).message);
    }
    return { json: { token: jwt }, text: [jwt] };
  },
};

export const apiKeyCreate: Command = {
  words: ["api-key", "create"],
  summary: "Create a site API key (viewer, editor or admin); the key is printed once.",
  usage: "npx opsmantik api-key create --site ID --role viewer|editor|admin [--name N] [--json]",
  options: { site: { type: "string" }, role: { type: "string" }, name: { type: "string" } },
  async run(values) {
    const siteId = requiredUuid(values, "site");
    const role = required(values, "role");
    if (!["viewer", "editor", "admin"].includes(role)) throw new UsageError("--role must be viewer, editor or admin");
    const created = await withOwnerClient(readConfig(), async (db) => {
      const { rows: sites } = await db.query("select 1 from app_public.sites where id = $1", [siteId]);
      if (sites.length === 0) throw new CommandError("site_not_found", `no site has the id ${siteId}`);
      const { rows } = await db.query("select * from app_private.issue_api_key($1, $2, $3, null)", [siteId, role, values.name ?? ""]);
      return rows[0];
    });
    return {
      json: { id: created.api_key_id, key: created.key },
      text: [`API key ${created.api_key_id} (${role}) created`, `key: ${created.key}   (shown once)`],
    };
  },
};

export const apiKeyRevoke: Command = {
  words: ["api-key", "revoke"],
  summary: "Revoke a site API key at once.",
  usage: "npx opsmantik api-key revoke --id KEY_ID [--json]",
  options: { id: { type: "string" } },
  async run(values) {
    const id = requiredUuid(values, "id");
    const revoked = await withOwnerClient(readConfig(), async (db) => {
      const { rows } = await db.query(
        "update app_public.api_keys set revoked_at = coalesce(revoked_at, now()) where id = $1 returning id, revoked_at", [id],
      );
      if (rows.length === 0) throw new CommandError("api_key_not_found", `no API key has the id ${id}`);
      return rows[0];
    });
    return { json: { id: revoked.id, revoked_at: revoked.revoked_at }, text: [`API key ${revoked.id} revoked`] };
  },
};
