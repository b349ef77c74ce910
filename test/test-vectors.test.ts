/*
 * The published test vectors (docs/test-vectors) are what the product does: each case goes
 * through the same SQL a sale and its upload go through. A CRM checks its own normalisation
 * against these files, so a case that drifted from the code would mislead it.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { closeRootPool, createUser, sqlState, unique, withRootDb } from "./helpers/db";
import { createTrackedSite, Queryable } from "./helpers/revenue";

interface IdentifierCase { why: string; input: string; normalised: string | null; sha256: string | null }
interface TimeCase { why: string; time_zone: string; instant: string; google_time: string }

const vectors = (name: string) => JSON.parse(readFileSync(join(__dirname, "..", "docs", "test-vectors", name), "utf8"));
const identifiers: { email: IdentifierCase[]; phone: IdentifierCase[] } = vectors("hashed-identifiers.json");
const times: { cases: TimeCase[] } = vectors("conversion-times.json");
const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest("hex");

/** A sale an hour old with a gclid, and the email or phone given. */
const confirmSale = (db: Queryable, siteId: string, { email = null, phone = null }: { email?: string | null; phone?: string | null } = {}) => db.query(
  `select app_public.confirm_sale_and_enqueue(site_id => $1, external_id => $2, amount => 10, currency => 'TRY',
                                              occurred_at => now() - interval '1 hour', gclid => 'gclid-vector', email => $3, phone => $4)`,
  [siteId, unique("CRM-vector"), email, phone]);

afterAll(closeRootPool);

describe.each(["email", "phone"] as const)("%s vectors (docs/test-vectors/hashed-identifiers.json)", (kind) => {
  const cases = identifiers[kind];

  test("cover both what is hashed and what is refused", () => {
    expect(cases.filter((c) => c.normalised !== null).length).toBeGreaterThanOrEqual(4);
    expect(cases.filter((c) => c.normalised === null).length).toBeGreaterThanOrEqual(3);
  });

  test.each(cases.map((c) => [c.why, c] as const))("%s", async (_why, c) => {
    // The file's hash is the SHA-256 of its normalised form (so the file is right on its own)...
    expect(c.sha256).toBe(c.normalised === null ? null : sha256(c.normalised));
    await withRootDb(async (client) => {
      // ...the database's rule gives the same normalised form and hash...
      const { rows: [rule] } = await client.query<{ normalised: string | null; sha256: string | null }>(
        `select n as normalised, app_hidden.identifier_sha256(n) as sha256
           from (select case $1 when 'email' then app_hidden.normalize_email($2) else app_hidden.normalize_phone($2) end as n) x`,
        [kind, c.input]);
      expect(rule).toEqual({ normalised: c.normalised, sha256: c.sha256 });

      // ...and a sale carrying the input stores exactly that hash, or is refused with nothing stored.
      const site = await createTrackedSite(client, await createUser(client));
      const confirm = () => confirmSale(client, site.id, kind === "email" ? { email: c.input } : { phone: c.input });
      if (c.normalised === null) {
        expect(await sqlState(client, confirm)).toBe("OMSAL");
        return;
      }
      await confirm();
      const { rows } = await client.query<{ email_sha256: string | null; phone_sha256: string | null }>(
        "select email_sha256, phone_sha256 from app_private.sale_identifiers where site_id = $1", [site.id]);
      expect(rows).toEqual([kind === "email" ? { email_sha256: c.sha256, phone_sha256: null } : { email_sha256: null, phone_sha256: c.sha256 }]);
    });
  });
});

describe("conversion time vectors (docs/test-vectors/conversion-times.json)", () => {
  test("cover negative, zero, half- and quarter-hour offsets and both clock changes", () => {
    const offsets = new Set(times.cases.map((c) => c.google_time.slice(-6)));
    for (const offset of ["+00:00", "-05:00", "-03:30", "+05:30", "+05:45", "-07:00", "-08:00"]) expect(offsets).toContain(offset);
  });

  test.each(times.cases.map((c) => [c.why, c] as const))("%s", async (_why, c) => {
    await withRootDb(async (client) => {
      // The shaped payload of a queued conversion at that instant, for a site in that zone.
      const site = await createTrackedSite(client, await createUser(client));
      await client.query("update app_public.sites set timezone = $2 where id = $1", [site.id, c.time_zone]);
      await confirmSale(client, site.id);
      await client.query("update app_public.offline_conversion_queue set conversion_at = $2 where site_id = $1", [site.id, c.instant]);
      const { rows } = await client.query<{ conversion_time: string }>(
        `select p.conversion_time from app_private.conversion_payloads($1, array(
           select q.id from app_public.offline_conversion_queue q where q.site_id = $1)) p`, [site.id]);
      expect(rows).toEqual([{ conversion_time: c.google_time }]);
    });
  });
});
