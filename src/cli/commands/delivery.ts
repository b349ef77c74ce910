/*
 * Delivery to Google from the command line: destinations (the OAuth refresh token is read from
 * standard input, never from arguments, which end up in shell history and `ps`), the export
 * credential for Google's scheduled CSV imports, and re-wrapping the credential vault.
 */
import { randomBytes, createHash } from "node:crypto";
import { readConfig } from "../../config";
import { rotateVault, storeRefreshToken } from "../../vault/credentials";
import { Vault } from "../../vault/vault";
import { Command, CommandError, required, requiredUuid, UsageError } from "../command";
import { withOwnerClient } from "../owner-client";
import pg from "pg";

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write("OAuth refresh token (then Enter and Ctrl-D): ");
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks).toString("utf8").trim();
}

export const destinationCreate: Command = {
  words: ["destination", "create"],
  summary: "Add a site's Google destination; the OAuth refresh token is read from standard input and stored encrypted.",
  usage: "npx opsmantik destination create --site ID --rail datamanager|google_ads --customer-id C [--login-customer-id L] --conversion-action A [--json] < refresh-token-file",
  options: { site: { type: "string" }, rail: { type: "string" }, "customer-id": { type: "string" }, "login-customer-id": { type: "string" },
    "conversion-action": { type: "string" } },
  async run(values) {
    const siteId = requiredUuid(values, "site");
    const rail = required(values, "rail");
    if (rail !== "datamanager" && rail !== "google_ads") throw new UsageError("--rail must be datamanager or google_ads");
    const customerId = required(values, "customer-id");
    const conversionAction = required(values, "conversion-action");
    const config = readConfig();
    const vault = new Vault(config.vaultKeys);
    if (config.vaultKeys.length === 0) throw new CommandError("vault_not_configured", "VAULT_KEYS is not set: credentials cannot be stored");
    const refreshToken = await readStdin();
    if (!refreshToken) throw new UsageError("pipe the OAuth refresh token into standard input");
    const created = await withOwnerClient(config, async (db) => {
      await db.query("begin");
      try {
        const { rows } = await db.query("select * from app_public.create_destination($1, $2, $3, $4, $5)",
          [siteId, rail, customerId, conversionAction, (values["login-customer-id"] as string | undefined) ?? null]);
        if (!rows[0]) throw new CommandError("site_not_found", `no site has the id ${siteId}`);
        const destination = await storeRefreshToken((text, params) => db.query(text, params), vault, rows[0].id, refreshToken);
        await db.query("commit");
        return destination;
      } catch (error) {
        await db.query("rollback");
        if ((error as { code?: string }).code === "23503") throw new CommandError("site_not_found", `no site has the id ${siteId}`);
        throw error;
      }
    });
    return {
      json: { id: created.id },
      text: [`destination ${created.id} (${rail}, customer ${created.customer_id}) created; token stored encrypted (…${created.credentials_last4})`],
    };
  },
};

export const exportCredentialCreate: Command = {
  words: ["export-credential", "create"],
  summary: "Issue HTTP Basic credentials for Google's scheduled import of the site's conversion CSV (printed once).",
  usage: "npx opsmantik export-credential create --site ID [--json]",
  options: { site: { type: "string" } },
  async run(values) {
    const siteId = requiredUuid(values, "site");
    const username = `oci_${randomBytes(9).toString("base64url")}`;
    const password = randomBytes(32).toString("base64url");
    await withOwnerClient(readConfig(), async (db) => {
      const { rows } = await db.query("select 1 from app_public.sites where id = $1", [siteId]);
      if (rows.length === 0) throw new CommandError("site_not_found", `no site has the id ${siteId}`);
      await db.query("insert into app_private.export_credentials (site_id, username, password_sha256) values ($1, $2, $3)",
        [siteId, username, createHash("sha256").update(password).digest()]);
    });
    return {
      json: { username, password },
      text: [`username: ${username}`, `password: ${password}   (shown once; give both to Google Ads' scheduled upload)`],
    };
  },
};

export const exportCredentialRevoke: Command = {
  words: ["export-credential", "revoke"],
  summary: "Revoke an export credential at once.",
  usage: "npx opsmantik export-credential revoke --username U [--json]",
  options: { username: { type: "string" } },
  async run(values) {
    const username = required(values, "username");
    const removed = await withOwnerClient(readConfig(), async (db) =>
      (await db.query("delete from app_private.export_credentials where username = $1", [username])).rowCount ?? 0);
    if (removed === 0) throw new CommandError("not_found", `no export credential has the username ${username}`);
    return { json: { username, revoked: true }, text: [`export credential ${username} revoked`] };
  },
};

export const vaultRotate: Command = {
  words: ["vault", "rotate"],
  summary: "Re-wrap every stored credential under the first VAULT_KEYS key (online, row by row).",
  usage: "npx opsmantik vault rotate [--json]   (with VAULT_KEYS=new:…,old:…)",
  options: {},
  async run(_values, io) {
    const config = readConfig();
    if (config.vaultKeys.length === 0) throw new CommandError("vault_not_configured", "VAULT_KEYS is not set");
    const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 2, application_name: "opsmantik-cli" });
    try {
      const result = await rotateVault(pool, new Vault(config.vaultKeys), (done, total) => {
        if (done % 100 === 0 || done === total) io.log(`re-wrapped ${done}/${total}`);
      });
      if (result.failed.length > 0) {
        for (const failure of result.failed) io.log(`destination ${failure.destinationId}: ${failure.reason}`);
        throw new CommandError("rotation_incomplete",
          `${result.rotated} credentials re-wrapped; ${result.failed.length} could not be opened (listed above) and stay under their old key`);
      }
      return {
        json: { active_key_id: result.activeKeyId, rotated: result.rotated, remaining: result.remaining },
        text: [`${result.rotated} credentials re-wrapped under key "${result.activeKeyId}"; ${result.remaining} left under other keys`,
          ...(result.remaining === 0 ? ["older keys may now be removed from VAULT_KEYS"] : [])],
      };
    } finally {
      await pool.end();
    }
  },
};
