/*
 * What the GraphQL endpoint refuses to do, and what it refuses to say. Queries too deep or
 * asking for too many rows are rejected before they run; database errors reach the client as
 * our stable codes and plain sentences, never as SQL, constraint names or stack traces; and
 * nothing from app_private or app_hidden shows up in the schema. Bounds come from
 * src/graphql/limits.ts, so the tests follow the limits if they are retuned.
 */
import { spawn } from "node:child_process";
import { getIntrospectionQuery } from "postgraphile/graphql";
import { PROJECT_ROOT } from "../src/config";
import { MAX_DEPTH, MAX_PAGE_PRODUCT, MAX_PAGE_SIZE } from "../src/graphql/limits";
import { addMember, createApiKey, createSite, createUser, getRootPool, unique } from "./helpers/db";
import { startTestService, TestService, tokenFor } from "./helpers/http";

let service: TestService;
let ownerId: string;
let editorId: string;
let siteId: string;
let ownerToken: string;

beforeAll(async () => {
  const client = await getRootPool().connect();
  try {
    ownerId = await createUser(client);
    editorId = await createUser(client, `${unique("editor")}@example.com`);
    ({ id: siteId } = await createSite(client, ownerId));
    await addMember(client, siteId, editorId, "editor");
    await createApiKey(client, siteId, "viewer");
  } finally {
    client.release();
  }
  service = await startTestService();
  ownerToken = await tokenFor(ownerId);
});

afterAll(async () => {
  await service?.stop();
});

/** A query that did not run: HTTP 400, or 200 with errors and no data. Returns the messages. */
function rejectedMessages(response: { status: number; body: any }): string[] {
  expect([200, 400]).toContain(response.status);
  expect(response.body.data ?? null).toBeNull();
  expect(Array.isArray(response.body.errors)).toBe(true);
  return response.body.errors.map((e: { message: string }) => e.message);
}

function expectAccepted(response: { status: number; body: any }): void {
  expect({ status: response.status, errors: response.body.errors }).toEqual({ status: 200, errors: undefined });
  expect(response.body.data).toBeTruthy();
}

/** The real service in a separate node process (tsx), on an ephemeral port; stop() ends it. */
async function startServiceInChildProcess(): Promise<{ url: string; stop(): Promise<void> }> {
  const script = `
    require("./src/polyfills"); require("./test/helpers/env");
    const { readConfig } = require("./src/config"); const { startService } = require("./src/server");
    startService(readConfig(), { http: true, worker: false }).then((service) => {
      process.stdout.write(JSON.stringify({ url: service.url }) + "\\n");
      process.stdin.on("end", () => service.stop().then(() => process.exit(0)));
      process.stdin.resume();
    }, (error) => { process.stderr.write(error.message); process.exit(1); });`;
  const child = spawn(process.execPath, ["--import", "tsx", "-e", script], { cwd: PROJECT_ROOT, env: process.env, stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  const url = await new Promise<string>((resolve, reject) => {
    let stdout = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      const line = stdout.split("\n")[0];
      if (stdout.includes("\n")) resolve(JSON.parse(line).url);
    });
    void exited.then((code) => reject(new Error(`the service exited (${code}) before listening: ${stderr}`)));
  });
  return {
    url,
    async stop() {
      child.stdin.end();
      await exited;
    },
  };
}

/* ------------------------------------------------------------------ depth */

/*
 * A path through the schema that is deep without being self-referential more than twice per
 * field and without nesting more than three lists, so only the depth bound can trip on it.
 * Every segment has a selection set and counts one level.
 */
const DEEP_PATH = [
  "query", "query", "allSites(first: 1)", "nodes", "siteMembersBySiteId(first: 1)", "nodes", "userByUserId",
  "apiKeysByCreatedBy(first: 1)", "nodes", "siteBySiteId", "apiKeysBySiteId(first: 1)", "nodes", "userByCreatedBy",
];

function queryOfDepth(depth: number): string {
  if (depth > DEEP_PATH.length) throw new Error(`MAX_DEPTH grew to ${MAX_DEPTH}: extend DEEP_PATH`);
  const path = DEEP_PATH.slice(0, depth);
  return `{ ${path.map((segment) => `${segment} { `).join("")}__typename${" }".repeat(depth)} }`;
}

describe("query depth", () => {
  test(`a query exactly MAX_DEPTH (${MAX_DEPTH}) deep runs`, async () => {
    expectAccepted(await service.graphql(queryOfDepth(MAX_DEPTH), undefined, ownerToken));
  });

  test("one level deeper is rejected, naming depth", async () => {
    const messages = rejectedMessages(await service.graphql(queryOfDepth(MAX_DEPTH + 1), undefined, ownerToken));
    expect(messages.join(" ")).toMatch(/depth/i);
  });

  test("hiding the depth in fragments does not help", async () => {
    const path = DEEP_PATH.slice(0, MAX_DEPTH + 1);
    const middle = 6; // split the path: the deep half lives in a fragment on SiteMember
    const outer = path.slice(0, middle);
    const inner = path.slice(middle);
    const document = `
      { ${outer.map((s) => `${s} { `).join("")}...Deep${" }".repeat(outer.length)} }
      fragment Deep on SiteMember { ${inner.map((s) => `${s} { `).join("")}__typename${" }".repeat(inner.length)} }`;
    const messages = rejectedMessages(await service.graphql(document, undefined, ownerToken));
    expect(messages.join(" ")).toMatch(/depth/i);
  });

  test("the standard introspection query (what GraphiQL and Ruru send) is accepted", async () => {
    // The IDE at /graphiql is useless if its own schema request trips the depth limit.
    for (const options of [{}, { descriptions: true, inputValueDeprecation: true, specifiedByUrl: true, directiveIsRepeatable: true }]) {
      const response = await service.graphql(getIntrospectionQuery(options), undefined, ownerToken);
      expectAccepted(response);
      expect(response.body.data.__schema.queryType.name).toBe("Query");
    }
  });
});

/* ------------------------------------------------------------------ page sizes */

describe("page sizes", () => {
  test(`first: ${MAX_PAGE_SIZE} is allowed`, async () => {
    expectAccepted(await service.graphql(`{ allSites(first: ${MAX_PAGE_SIZE}) { nodes { rowId } } }`, undefined, ownerToken));
  });

  test("first: 5000 is rejected, naming the page limit", async () => {
    const messages = rejectedMessages(await service.graphql("{ allSites(first: 5000) { nodes { rowId } } }", undefined, ownerToken));
    expect(messages.join(" ")).toContain(`at most ${MAX_PAGE_SIZE} rows`);
  });

  test("last: 5000 and a variable defaulting to 5000 are rejected too", async () => {
    for (const document of [
      "{ allSites(last: 5000) { nodes { rowId } } }",
      "query($n: Int = 5000) { allSites(first: $n) { nodes { rowId } } }",
    ]) {
      const messages = rejectedMessages(await service.graphql(document, undefined, ownerToken));
      expect(messages.join(" ")).toContain(`at most ${MAX_PAGE_SIZE} rows`);
    }
  });

  test("a page size passed as a variable value is bounded as well, refused as a validation error is, with nothing printed", async () => {
    // Validation cannot see variable values; the bound must still hold when the request runs.
    const printed = jest.spyOn(console, "error").mockImplementation(() => undefined);
    try {
      const response = await service.graphql("query($n: Int!) { allSites(first: $n) { nodes { rowId } } }", { n: 5000 }, ownerToken);
      const literal = await service.graphql("{ allSites(first: 5000) { nodes { rowId } } }", undefined, ownerToken);
      expect(response.status).toBe(literal.status);
      const messages = rejectedMessages(response);
      expect(messages).toEqual([`A page may hold at most ${MAX_PAGE_SIZE} rows (allSites asks for 5000).`]);
      expect(printed).not.toHaveBeenCalled();
    } finally {
      printed.mockRestore();
    }
  });

  test("nested pages whose product exceeds MAX_PAGE_PRODUCT are rejected; at the bound they run", async () => {
    const innerAtBound = Math.floor(MAX_PAGE_PRODUCT / MAX_PAGE_SIZE);
    const nested = (inner: number) =>
      `{ allSites(first: ${MAX_PAGE_SIZE}) { nodes { siteMembersBySiteId(first: ${inner}) { nodes { role } } } } }`;
    expectAccepted(await service.graphql(nested(innerAtBound), undefined, ownerToken));
    const messages = rejectedMessages(await service.graphql(nested(innerAtBound + 1), undefined, ownerToken));
    expect(messages.join(" ")).toContain(`more than ${MAX_PAGE_PRODUCT} rows`);
  });

  test("a normal dashboard query runs and returns the site's data", async () => {
    const response = await service.graphql(`query Dashboard {
      currentUser { rowId email displayName }
      allSites(first: 20) {
        totalCount
        pageInfo { hasNextPage endCursor }
        nodes {
          rowId name domain publicKey consentMode timezone currency monthlyEventQuota allowedOrigins
          siteMembersBySiteId(first: 50) { totalCount nodes { role userByUserId { rowId email } } }
          apiKeysBySiteId(first: 50) { nodes { name role keyPrefix lastUsedAt revokedAt } }
        }
      }
      allAuditLogs(first: 50) { totalCount nodes { seq action targetTable occurredAt } }
    }`, undefined, ownerToken);
    expectAccepted(response);
    const { currentUser, allSites, allAuditLogs } = response.body.data;
    expect(currentUser.rowId).toBe(ownerId);
    expect(allSites.totalCount).toBe(1);
    const [site] = allSites.nodes;
    expect(site.rowId).toBe(siteId);
    expect(site.siteMembersBySiteId.totalCount).toBe(2);
    expect(site.siteMembersBySiteId.nodes.map((m: any) => m.userByUserId.rowId).sort()).toEqual([ownerId, editorId].sort());
    expect(site.apiKeysBySiteId.nodes).toHaveLength(1);
    expect(allAuditLogs.totalCount).toBeGreaterThan(0);
  });
});

/* ------------------------------------------------------------------ error masking */

describe("database errors reach clients as codes and sentences", () => {
  let constraintNames: string[];

  beforeAll(async () => {
    const { rows } = await getRootPool().query(
      `select c.conname from pg_constraint c join pg_namespace n on n.oid = c.connamespace
        where n.nspname in ('app_public', 'app_hidden', 'app_private')`);
    constraintNames = rows.map((r) => r.conname);
    expect(constraintNames).toContain("sites_timezone_known"); // the list is real
  });

  /** Nothing in the whole response tells how the server is built. */
  function expectNoInternals(body: unknown): void {
    const text = JSON.stringify(body);
    expect(text).not.toMatch(/app_(private|public|hidden)|\bsql\b|select|insert|update |constraint|violates|relation "|column "|out of range|bigint|stack|\n\s+at |\.[jt]s:\d+|\bOM[A-Z0-9]{3}\b|SQLSTATE|pg_|"detail"|"hint"/i);
    expect(constraintNames.filter((name) => text.includes(name))).toEqual([]);
  }

  async function siteRow(): Promise<Record<string, unknown>> {
    return (await getRootPool().query("select name, domain, timezone, currency, consent_mode, monthly_event_quota from app_public.sites where id = $1", [siteId])).rows[0];
  }

  test.each([
    ["an unknown time zone", { timezone: "Mars/Olympus_Mons" }, /time zone/i],
    ["a lower-case currency", { currency: "usd" }, /currency/i],
    ["a domain that is not a host name", { domain: "not a domain" }, /domain/i],
    ["an unknown consent mode", { consentMode: "sometimes" }, /consent mode/i],
    ["a negative quota", { monthlyEventQuota: "-1" }, /quota/i],
  ])("updateSiteSettings with %s answers invalid_input with our sentence, and changes nothing", async (_what, settings, sentence) => {
    const before = await siteRow();
    const response = await service.graphql(
      "mutation($input: UpdateSiteSettingsInput!) { updateSiteSettings(input: $input) { result { rowId } } }",
      { input: { siteId, ...settings } }, ownerToken);
    expect(response.status).toBe(200);
    expect(response.body.data.updateSiteSettings).toBeNull();
    expect(response.body.errors).toHaveLength(1);
    expect(response.body.errors[0].extensions).toEqual({ code: "invalid_input" });
    expect(response.body.errors[0].message).toMatch(sentence);
    expectNoInternals(response.body);
    expect(await siteRow()).toEqual(before);
  });

  test("an unexpected database error in a mutation (bigint overflow) is `internal` with no detail", async () => {
    const response = await service.graphql(
      "mutation($s: UUID!) { updateSiteSettings(input: {siteId: $s, monthlyEventQuota: \"99999999999999999999\"}) { result { rowId } } }",
      { s: siteId }, ownerToken);
    expect(response.status).toBe(200);
    expect(response.body.errors).toHaveLength(1);
    expect(response.body.errors[0].extensions).toEqual({ code: "internal" });
    expect(response.body.errors[0].message).toBe("The request could not be completed.");
    expectNoInternals(response.body);
  });

  test("an unexpected database error in a query (negative offset) is `internal` with no detail", async () => {
    const response = await service.graphql("{ allSites(offset: -1) { nodes { rowId } } }", undefined, ownerToken);
    expect(response.status).toBe(200);
    expect(response.body.errors).toHaveLength(1);
    expect(response.body.errors[0].extensions).toEqual({ code: "internal" });
    expectNoInternals(response.body);
  });

  test("a refused domain rule (removing the last owner) is last_owner with our sentence, and the owner stays", async () => {
    const response = await service.graphql(
      "mutation($s: UUID!, $u: UUID!) { removeSiteMember(input: {siteId: $s, userId: $u}) { result } }",
      { s: siteId, u: ownerId }, ownerToken);
    const { rows } = await getRootPool().query("select role from app_public.site_members where site_id = $1 and user_id = $2", [siteId, ownerId]);
    if (rows.length === 0) {
      // Put the owner back so the rest of this file still has one, then fail with the reason.
      await getRootPool().query("insert into app_public.site_members (site_id, user_id, role) values ($1, $2, 'owner')", [siteId, ownerId]);
    }
    expect(rows).toEqual([{ role: "owner" }]);
    expect(response.body.errors?.[0]?.extensions).toEqual({ code: "last_owner" });
    expect(response.body.errors[0].message).toBe("A site must keep at least one owner.");
    expectNoInternals(response.body);
  });

  test("a syntax error names the syntax, nothing else", async () => {
    const response = await service.graphql("{ allSites { nodes { rowId }", undefined, ownerToken);
    const messages = rejectedMessages(response);
    expect(messages.join(" ")).toMatch(/syntax/i);
    expectNoInternals(response.body);
  });
});

/* ------------------------------------------------------------------ IDE and schema surface */

describe("what the schema shows", () => {
  test("Ruru is served at GET /graphiql as HTML, with its script", async () => {
    // Ruru's HTML is produced through a dynamic import(), which jest's module sandbox refuses
    // without --experimental-vm-modules; so this one test talks to the same service started
    // in a plain node process, as `npm start` runs it.
    const child = await startServiceInChildProcess();
    try {
      const response = await fetch(`${child.url}/graphiql`, { headers: { accept: "text/html" } });
      expect(response.status).toBe(200);
      expect(response.headers.get("content-type")).toMatch(/^text\/html/);
      const html = await response.text();
      expect(html).toMatch(/<html/i);
      expect(html).toMatch(/ruru/i);
      const script = /src="([^"]+\.js)"|href="([^"]+\.js)"/.exec(html);
      expect(script).not.toBeNull();
      const asset = await fetch(new URL(script![1] ?? script![2], child.url));
      expect(asset.status).toBe(200);
    } finally {
      await child.stop();
    }
  });

  const snakeWords = (name: string) => name.split("_").filter(Boolean);
  const camel = (name: string) => snakeWords(name).map((w, i) => (i === 0 ? w : w[0].toUpperCase() + w.slice(1))).join("");
  const singular = (name: string) => (/(sh|ch|s|x)es$/.test(name) ? name.slice(0, -2) : name.replace(/s$/, ""));

  let names: { types: string[]; fields: string[]; enumValues: string[] };

  beforeAll(async () => {
    // A compact introspection (the standard one is tested above) of every name in the schema.
    const response = await service.graphql(`{ __schema { types {
      name
      fields(includeDeprecated: true) { name args { name } }
      inputFields { name }
      enumValues(includeDeprecated: true) { name }
    } } }`, undefined, ownerToken);
    expectAccepted(response);
    const types: any[] = response.body.data.__schema.types;
    names = {
      types: types.map((t) => t.name),
      fields: types.flatMap((t) => [...(t.fields ?? []).flatMap((f: any) => [f.name, ...f.args.map((a: any) => a.name)]), ...(t.inputFields ?? []).map((f: any) => f.name)]),
      enumValues: types.flatMap((t) => (t.enumValues ?? []).map((v: any) => v.name)),
    };
  });

  /** Does any type or field name contain this token (case-insensitively)? */
  const mentioned = (token: string) =>
    [...names.types, ...names.fields].filter((name) => name.toLowerCase().includes(token.toLowerCase()));

  test("control: every app_public table shows up under its name", async () => {
    const { rows } = await getRootPool().query(
      "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'app_public' and c.relkind in ('r', 'p') and not c.relispartition");
    expect(rows.length).toBeGreaterThanOrEqual(5);
    expect(rows.map((r) => singular(camel(r.relname))).filter((token) => mentioned(token).length === 0)).toEqual([]);
  });

  test("no type or field is derived from an app_private table", async () => {
    const { rows } = await getRootPool().query(
      "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'app_private' and c.relkind in ('r', 'p', 'v', 'm', 'c')");
    const tokens = rows.map((r) => singular(camel(r.relname)));
    expect(tokens).toEqual(expect.arrayContaining(["apiKeyHash", "callEventSecret", "auditChainHead", "workerHeartbeat"]));
    expect(tokens.flatMap((token) => mentioned(token).map((name) => `${token}: ${name}`))).toEqual([]);
  });

  test("no field, argument or order is derived from a column only app_private has", async () => {
    // Columns of app_private tables whose name nothing in app_public uses (key_hash, current_secret…).
    const { rows } = await getRootPool().query(`
      select distinct a.attname from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'app_private' and c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped
      except
      select a.attname from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'app_public' and a.attnum > 0
      except
      select unnest(p.proargnames) from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'app_public'`);
    const columns = rows.map((r) => r.attname as string);
    expect(columns).toEqual(expect.arrayContaining(["key_hash", "current_secret", "previous_secret", "last_hash"]));
    const exposed = columns.flatMap((column) => [
      ...names.fields.filter((f) => f === camel(column)),
      ...names.enumValues.filter((v) => v === column.toUpperCase() || v.startsWith(`${column.toUpperCase()}_`)),
    ]);
    expect(exposed).toEqual([]);
  });

  test("no field or type is derived from an app_private or app_hidden function", async () => {
    const { rows } = await getRootPool().query(`
      select distinct p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
       where n.nspname in ('app_private', 'app_hidden')
         and p.proname not in (select q.proname from pg_proc q join pg_namespace m on m.oid = q.pronamespace where m.nspname = 'app_public')`);
    const functions = rows.map((r) => r.proname as string);
    expect(functions).toEqual(expect.arrayContaining(["issue_api_key", "authenticate_api_key", "record_denied_attempt", "current_user_site_ids"]));
    const exposed = functions.flatMap((fn) => {
      const field = camel(fn);
      const type = field[0].toUpperCase() + field.slice(1);
      return [...names.fields.filter((f) => f === field), ...names.types.filter((t) => t.startsWith(type))];
    });
    expect(exposed).toEqual([]);
  });
});
